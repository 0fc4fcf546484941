import EpochCrypto
import EpochFormat
import EpochHeader
import EpochVolume
import EpochWAL
import Foundation
import Glibc
import Support
import Testing

/// `retire` on a volume with a raft cutover: refused until the WAL directories are named and
/// none of their entries above the cutover names the epoch, offline and through a mount.
@Suite(.serialized) struct RetireWALTests {
    @Test func offlineRetireChecksTheNamedWALDirectories() throws {
        let directory = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory.path + "/keys", withIntermediateDirectories: true)
        for epoch in 1...2 { try Data(randomBytes(32)).write(to: URL(fileURLWithPath: directory.path + "/keys/\(epoch).key")) }
        let backing = directory.path + "/backing"
        _ = try Volume.create(backing: backing, keySource: "file:\(directory.path)/keys/%d.key", epoch: 1, blockSize: 4096)
        let journal = try Volume.journal(backing: backing)
        let header = try journal.setRaftCutover(WrappedLog.cutover)
        let oldLog = try WrappedLog(in: directory, wrapper: try wrapper(header, epoch: 1))
        let rekeyed = try journal.rekey(to: 2).header

        let unnamed = try runBounded([epochfsPath, "retire", backing, "1"], seconds: 60)
        #expect(unnamed.status == 3 && unnamed.stderr.contains("the raft cutover is 5"), "\(unnamed.output)")
        let named = try runBounded([epochfsPath, "retire", backing, "1", "--wal", oldLog.walDirectory], seconds: 60)
        #expect(named.status == 3, "\(named.output)")
        #expect(named.stderr.contains("74 items (74 WAL entries), among them \(oldLog.walDirectory) entry 7"), "\(named.stderr)")

        let newer = TemporaryDirectory()
        let newLog = try WrappedLog(in: newer, wrapper: try wrapper(rekeyed, epoch: 2))
        let retired = try runBounded([epochfsPath, "retire", backing, "1", "--wal", newLog.walDirectory], seconds: 60)
        #expect(retired.status == 0, "\(retired.output)")
        // The old log's entries now fail closed with their own error.
        let verify = try runBounded([epochfsPath, "wal", "verify", oldLog.walDirectory, "--backing", backing], seconds: 60)
        #expect(verify.status == 1 && verify.stderr.contains("key id 1 is retired"), "\(verify.output)")
    }

    @Test func liveRetireChecksAWALInsideTheMount() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        #expect(volume.control("raft-cutover \(WrappedLog.cutover)") == 0)
        let header = try Volume.journal(backing: volume.backing).open()
        let walParent = TemporaryDirectory()
        let oldLog = try WrappedLog(in: walParent, wrapper: try wrapper(header, epoch: 1))
        try FileManager.default.copyItem(atPath: oldLog.walDirectory, toPath: volume.path("wal"))
        #expect(volume.control("rekey 2") == 0)

        #expect(volume.control("retire 1") == EBUSY)
        #expect((try volume.status()["last_error"] as? String)?.contains("name the WAL directories") == true)
        let refused = try volume.epochfs("retire", "--mount", volume.mountpoint, "1", "--wal", volume.path("wal"))
        #expect(refused.status == 3 && refused.stderr.contains("74 WAL entries"), "\(refused.output)")

        try FileManager.default.removeItem(atPath: volume.path("wal"))
        let newParent = TemporaryDirectory()
        let newLog = try WrappedLog(in: newParent, wrapper: try wrapper(try Volume.journal(backing: volume.backing).open(), epoch: 2))
        try FileManager.default.copyItem(atPath: newLog.walDirectory, toPath: volume.path("wal"))
        let retired = try volume.epochfs("retire", "--mount", volume.mountpoint, "1", "--wal", volume.path("wal"))
        #expect(retired.status == 0, "\(retired.output)")
        #expect((try volume.status()["keyring"] as? [[String: Any]])?.first?["state"] as? String == "retired")
    }
}

private func wrapper(_ header: VolumeHeader, epoch: Epoch) throws -> RaftPayloadWrapper {
    try RaftPayloadWrapper(keyID: epoch, raftDEK: AESGCMKey(try #require(try header.keyring.keys(for: epoch).raftDEK)))
}

private func randomBytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255) } }
