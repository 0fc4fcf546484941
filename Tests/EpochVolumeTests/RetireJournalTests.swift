import EpochFormat
import EpochVolume
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
}
