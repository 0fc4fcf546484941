import EpochFormat
import EpochHeader
import EpochIO
import EpochStore
import EpochVolume
import Glibc
import Support
import Testing

/// `retire` in the header journal: the keys of the epoch are gone from both slots, and the
/// active epoch is never retired.
@Suite struct RetireJournalTests {
    @Test func retiredKeysAreInNeitherSlot() throws {
        let keys = try KeyFiles(epochs: 1...2)
        let directory = TemporaryDirectory()
        let backing = directory.path + "/backing"
        _ = try Volume.create(backing: backing, keySource: "file:\(keys.directory.path)/%d.key", epoch: 1, blockSize: 4096)
        let journal = try Volume.journal(backing: backing)
        _ = try journal.rekey(to: 2)
        #expect(throws: JournalError.retiringActiveEpoch(2)) { try journal.retire(epoch: 2) }
        #expect(throws: JournalError.epochNotInKeyring(5)) { try journal.retire(epoch: 5) }

        let retired = try journal.retire(epoch: 1)
        let key = try keys.source.wrappingKey(epoch: 2, derivation: .direct)
        for index in 0..<2 {
            let keyring = try HeaderSlot.decode(try journal.store.read(slot: index)).openKeyring(wrappingKey: key)
            #expect(keyring.epochs.map(\.state) == [.retired, .active], "slot \(index)")
            #expect(keyring.epochs[0].storageDEK == nil && keyring.epochs[0].raftDEK == nil)
        }
        let unchanged = try journal.store.read(slot: retired.slotIndex)
        #expect(try journal.retire(epoch: 1).sequence == retired.sequence, "retiring a retired epoch writes nothing")
        #expect(try journal.store.read(slot: retired.slotIndex) == unchanged)
    }

    /// A file open across the retire of an epoch it was written under: an old copy of its
    /// blocks put back underneath (a restore from backup) fails closed there too, not through a
    /// key kept from before.
    @Test func aFileOpenAcrossTheRetireFailsClosedOnItsOldBlocks() throws {
        let keys = try KeyFiles(epochs: 1...2)
        let directory = TemporaryDirectory()
        let backing = directory.path + "/backing"
        _ = try Volume.create(backing: backing, keySource: "file:\(keys.directory.path)/%d.key", epoch: 1, blockSize: 4096)
        let volume = try LiveVolume(backing: backing)
        let tree = try BackingTree(volume: volume)
        let (handle, file, _) = try tree.create(Array("f".utf8), in: tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { tree.close(handle) }
        let content = (0..<10_000).map { UInt8(truncatingIfNeeded: $0) }
        try content.withUnsafeBytes { try tree.write(file, through: handle, offset: 0, data: $0, caller: 0) }
        let io = SystemIO()
        let epochOne = try io.preadFully(handle, count: try io.size(handle), at: 0)

        try volume.rekey(to: 2)
        try content.withUnsafeBytes { try tree.write(file, through: handle, offset: 0, data: $0, caller: 0) }
        _ = try volume.retire(epoch: 1) { _ in }
        try io.pwriteFully(handle, epochOne, at: 0)
        #expect(throws: ContentError.block(index: 0, .retiredKey(1))) {
            try tree.read(file, through: handle, offset: 0, count: 4096) { Array($0) }
        }
    }
}
