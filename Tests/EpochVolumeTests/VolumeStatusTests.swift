@testable import EpochHeader
import EpochMetrics
@testable import EpochVolume
import Foundation
import Support
import Synchronization
import Glibc
import Testing

@Suite struct VolumeStatusTests {
    /// As `info --json` and the mount's status file encode it.
    static func json(_ status: VolumeStatus) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(status), as: UTF8.self)
    }

    /// A header at epoch 2 with epoch 1 read-only.
    static func header(_ keys: KeyFiles) throws -> VolumeHeader {
        let journal = HeaderJournal(store: FaultyHeaderStore(), source: keys.source)
        _ = try journal.create(epoch: 1, blockSize: 4096)
        return try journal.rekey(to: 2).header
    }

    /// The JSON scripts and tests read, byte for byte: offline without the mount's fields;
    /// mounted with counters, the last error (null when none) and the re-encryption stub.
    @Test func encodingIsUnchanged() throws {
        let keys = try KeyFiles()
        let header = try Self.header(keys)
        let slot = header.slotIndex == 0 ? "A" : "B"
        let keySource = "file:\(keys.directory.path)/%d.key"
        let keyring = #"[{"epoch":1,"state":"read-only"},{"epoch":2,"state":"active"}]"#
        #expect(try Self.json(VolumeStatus(header)) == """
            {"block_size":4096,"epoch":2,"format_version":5,"header_slot":"\(slot)","key_derivation":"direct","key_source":"\(keySource)",\
            "keyring":\(keyring),"raft_cutover":18446744073709551615,"sequence":\(header.sequence),"volume_id":"\(header.volumeID)"}
            """)

        let counters = VolumeCounters()
        counters.blocksRead.store(7, ordering: .relaxed)
        counters.blocksWritten.store(5, ordering: .relaxed)
        counters.authenticationFailures.store(1, ordering: .relaxed)
        counters.countFailure(ENOSPC)
        counters.countFailure(ENOSPC)
        counters.countFailure(EROFS)
        counters.countFailure(ENOENT) // not a failing disk: not counted
        #expect(try Self.json(VolumeStatus(header, counters: counters)) == """
            {"block_size":4096,"counters":{"authentication_failures":1,"blocks_read":7,"blocks_written":5,\
            "errors":{"EDQUOT":0,"EIO":0,"ENOSPC":2,"EROFS":1}},"epoch":2,"format_version":5,\
            "header_slot":"\(slot)","key_derivation":"direct","key_source":"\(keySource)","keyring":\(keyring),\
            "last_error":null,"raft_cutover":18446744073709551615,"reencryption":{"running":false},\
            "sequence":\(header.sequence),"volume_id":"\(header.volumeID)"}
            """)
    }

    /// Decoding what was encoded gives the same status, offline or mounted.
    @Test func roundTrips() throws {
        let header = try Self.header(try KeyFiles())
        let counters = VolumeCounters()
        counters.blocksWritten.store(3, ordering: .relaxed)
        for status in [VolumeStatus(header), VolumeStatus(header, counters: counters),
                       VolumeStatus(header, counters: counters, lastError: "rekey 1: epoch 1 is below the current epoch 2")] {
            let decoded = try JSONDecoder().decode(VolumeStatus.self, from: Data(try Self.json(status).utf8))
            #expect(decoded == status)
            #expect(decoded.isMounted == status.isMounted)
        }
    }
}
