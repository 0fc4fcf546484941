@testable import EpochHeader
import Support
import EpochCrypto
import EpochFormat
@testable import EpochVolume
import Testing

/// What must survive any crash: the keyring's secrets, compared by value.
struct KeyringFingerprint: Equatable {
    let nameKey: [UInt8]
    let storageDEKs: [Epoch: [UInt8]]
    let raftDEKs: [Epoch: [UInt8]]

    init(_ keyring: Keyring) {
        nameKey = keyring.nameKey.withUnsafeBytes { Array($0) }
        storageDEKs = Dictionary(uniqueKeysWithValues: keyring.epochs.map { ($0.epoch, $0.storageDEK!.withUnsafeBytes { Array($0) }) })
        raftDEKs = Dictionary(uniqueKeysWithValues: keyring.epochs.map { ($0.epoch, $0.raftDEK!.withUnsafeBytes { Array($0) }) })
    }

    /// True when every secret of `older` is still present, unchanged, in self.
    func preserves(_ older: KeyringFingerprint) -> Bool {
        nameKey == older.nameKey
            && older.storageDEKs.allSatisfy { storageDEKs[$0.key] == $0.value }
            && older.raftDEKs.allSatisfy { raftDEKs[$0.key] == $0.value }
    }
}

@Suite struct RekeyJournalTests {
    /// Every crash point of docs/FORMAT.md §3.6, plus a torn write at every 512-byte boundary.
    static let faults: [FaultyHeaderStore.Fault] =
        [.crashBeforeWrite, .crashAfterWriteBeforeSync, .crashAfterSyncBeforeSwitch, .failSync]
            + stride(from: 0, through: HeaderSlot.size, by: 512).map { .tornWrite(durableBytes: $0) }

    /// The epoch a volume must come back at after the fault, per step.
    static func expectedEpoch(after fault: FaultyHeaderStore.Fault, old: Epoch, new: Epoch) -> Epoch {
        switch fault {
        case .crashAfterSyncBeforeSwitch: new
        case let .tornWrite(bytes) where bytes == HeaderSlot.size: new
        default: old
        }
    }

    /// A volume at epoch 1, then rekeyed to 2 when `warm` (so the crashing commit overwrites a
    /// slot that held an older valid header instead of an empty one).
    func makeVolume(keys: KeyFiles, warm: Bool) throws -> (FaultyHeaderStore, HeaderJournal) {
        let store = FaultyHeaderStore()
        let journal = HeaderJournal(store: store, source: keys.source)
        _ = try journal.create(epoch: 1, blockSize: 4096)
        if warm { _ = try journal.rekey(to: 2) }
        return (store, journal)
    }

    @Test(arguments: [false, true])
    func crashAtEveryStepReopensAtOldOrNewEpochAndConverges(warm: Bool) throws {
        let keys = try KeyFiles()
        let old: Epoch = warm ? 2 : 1
        let new = Epoch(rawValue: old.rawValue + 3)
        for fault in Self.faults {
            let (store, journal) = try makeVolume(keys: keys, warm: warm)
            let before = try journal.open()
            let secretsBefore = KeyringFingerprint(before.keyring)
            // A block sealed before the rekey must stay readable whatever happens.
            let fileID = try FileID.random()
            let location = BlockLocation(volumeID: before.volumeID, fileID: fileID, blockIndex: 0)
            let fileKey = try AESGCMKey(StorageEnvelope.fileKey(storageDEK: before.keyring.active.storageDEK!,
                                                                 volumeID: before.volumeID, fileID: fileID))
            let block = try StorageEnvelope.seal(Array("survives \(fault)".utf8), keyID: old, fileKey: fileKey, location: location)

            store.arm(fault)
            #expect(throws: (any Error).self, "\(fault) must interrupt the rekey") { try journal.rekey(to: new) }
            store.restart()

            let reopened = try journal.open()
            #expect(reopened.epoch == Self.expectedEpoch(after: fault, old: old, new: new), "after \(fault)")
            #expect(reopened.keyring.activeEpoch == reopened.epoch)
            #expect(KeyringFingerprint(reopened.keyring).preserves(secretsBefore), "secrets changed after \(fault)")
            let keyring = reopened.keyring
            let opened = try StorageEnvelope.open(block, location: location) { id in
                try AESGCMKey(StorageEnvelope.fileKey(storageDEK: try keyring.keys(for: id).storageDEK!,
                                                      volumeID: before.volumeID, fileID: fileID))
            }
            #expect(opened == Array("survives \(fault)".utf8))

            // The retry converges, then writes nothing.
            let retried = try journal.rekey(to: new)
            #expect(retried.header.epoch == new)
            if case .rekeyed = retried {
                #expect(reopened.epoch == old, "a rekey after \(fault) wrote although the volume was at the target")
            }
            #expect(KeyringFingerprint(retried.header.keyring).preserves(KeyringFingerprint(reopened.keyring)))
            store.resetWriteCount()
            guard case .alreadyAtEpoch = try journal.rekey(to: new) else {
                Issue.record("a repeated rekey after \(fault) did not report already-at-epoch")
                continue
            }
            #expect(store.writeCount == 0, "a repeated rekey after \(fault) wrote")
        }
    }

    @Test func rekeyWritesTheInactiveSlotWithTheNextSequenceThenCopiesIt() throws {
        let keys = try KeyFiles()
        let (store, journal) = try makeVolume(keys: keys, warm: false)
        let first = try journal.open()
        #expect(first.slotIndex == 0)
        #expect(first.sequence == 1)
        #expect(try store.read(slot: 1) == store.read(slot: 0), "init copies its slot too")
        store.resetWriteCount()
        let second = try journal.rekey(to: 3).header
        #expect(store.writeCount == 2)
        #expect((second.slotIndex, second.sequence, second.epoch) == (1, 2, 3))
        #expect(second.keyring.epochs.map(\.state) == [.readOnly, .active])
        #expect(try store.read(slot: 0) == store.read(slot: 1), "the commit is copied over the other slot")
        // Equal slots: A is current, so every commit writes B first, then copies it over A.
        let third = try journal.rekey(to: 4).header
        #expect((third.slotIndex, third.sequence, third.epoch) == (1, 3, 4))
        // The raft cutover commits the same way and survives a rekey.
        let cut = try journal.setRaftCutover(1200)
        #expect((cut.slotIndex, cut.sequence, cut.epoch, cut.slot.raftCutover) == (1, 4, 4, 1200))
        #expect(try journal.rekey(to: 5).header.slot.raftCutover == 1200)
    }

    /// Once a rekey returned, a byte changed in either slot (damage, or someone with access to
    /// the backing dir) cannot bring back the older header: the other slot holds the same.
    @Test func aDamagedSlotAfterACommitCannotUndoIt() throws {
        let keys = try KeyFiles()
        for slot in 0..<2 {
            let (store, journal) = try makeVolume(keys: keys, warm: true)
            var bytes = try store.read(slot: slot)
            bytes[1200] ^= 0x01
            store.overwrite(slot: slot, with: bytes)
            #expect(try journal.open().epoch == 2, "slot \(slot) damaged")
        }
    }

    /// A crash at any step of the copy over the other slot leaves the new header: the commit
    /// itself was durable before the copy began.
    @Test func aCrashDuringTheCopyKeepsTheCommit() throws {
        let keys = try KeyFiles()
        for fault in Self.faults {
            let (store, journal) = try makeVolume(keys: keys, warm: true)
            store.arm(fault, atWrite: 2)
            #expect(throws: (any Error).self, "\(fault) must interrupt the copy") { try journal.rekey(to: 5) }
            store.restart()
            #expect(try journal.open().epoch == 5, "after \(fault) during the copy")
            store.resetWriteCount()
            guard case .alreadyAtEpoch = try journal.rekey(to: 5) else {
                Issue.record("a repeated rekey after \(fault) during the copy did not report already-at-epoch")
                continue
            }
            #expect(store.writeCount == 0)
        }
    }

    @Test func lowerEpochIsRefusedWithoutWriting() throws {
        let keys = try KeyFiles()
        let (store, journal) = try makeVolume(keys: keys, warm: true)
        store.resetWriteCount()
        #expect(throws: JournalError.epochBelowCurrent(current: 2, requested: 1)) { try journal.rekey(to: 1) }
        #expect(store.writeCount == 0)
        #expect(try journal.open().epoch == 2)
    }

    /// The newest slot is sealed under epoch 2's key. With a wrong key for epoch 2, the open
    /// fails closed although the older slot (epoch 1, as a crash before the copy leaves it)
    /// would open with the key files present.
    @Test func wrongKeyFailsClosedWithoutFallback() throws {
        let keys = try KeyFiles()
        let store = FaultyHeaderStore()
        let journal = HeaderJournal(store: store, source: keys.source)
        _ = try journal.create(epoch: 1, blockSize: 4096)
        store.arm(.crashBeforeWrite, atWrite: 2)
        #expect(throws: SimulatedCrash.self) { try journal.rekey(to: 2) }
        store.restart()
        // Epoch 2's key file now holds epoch 1's key, which opens the older slot.
        keys.directory.write(Array((keys.keys[1]!.hexString + "\n").utf8), to: "2.key")
        #expect(throws: JournalError.wrongKey(epoch: 2)) { try journal.open() }
        #expect(throws: JournalError.wrongKey(epoch: 2)) { try journal.rekey(to: 3) }
        // Proof that the older slot is intact and would have opened.
        let older = try HeaderSlot.decode(try store.read(slot: 0))
        #expect(older.epoch == 1)
        #expect(try older.openKeyring(wrappingKey: keys.source.wrappingKey(epoch: 1, derivation: .direct)).activeEpoch == 1)
    }

    @Test func twoTornSlotsFailClosed() throws {
        let keys = try KeyFiles()
        let (store, journal) = try makeVolume(keys: keys, warm: true)
        for slot in 0..<2 {
            var bytes = try store.read(slot: slot)
            bytes[100] ^= 0xff
            store.overwrite(slot: slot, with: bytes)
        }
        #expect(throws: JournalError.self) { try journal.open() }
    }

    /// The newest slot carries no epoch (0): trials run newest first without writing, then the
    /// epoch found is recorded by one ordinary commit.
    @Test func trialRecoveryFindsAndRecordsTheEpoch() throws {
        let keys = try KeyFiles(epochs: 1...6)
        let store = FaultyHeaderStore()
        let journal = HeaderJournal(store: store, source: keys.source)
        _ = try journal.create(epoch: 1, blockSize: 4096)
        let current = try journal.rekey(to: 4).header
        // Forge what a legacy writer would leave: the same keyring, epoch field unrecorded.
        var legacy = current.slot
        legacy.epoch = HeaderSlot.unrecordedEpoch
        legacy.sequence += 1
        try legacy.seal(current.keyring, wrappingKey: keys.source.wrappingKey(epoch: 4, derivation: .direct))
        store.overwrite(slot: 1 - current.slotIndex, with: try legacy.encoded())
        store.resetWriteCount()

        let recovered = try journal.open()
        #expect(recovered.epoch == 4)
        #expect(recovered.sequence == legacy.sequence + 1)
        #expect(store.writeCount == 2, "trials must not write; only the record does (and its copy)")
        #expect(KeyringFingerprint(recovered.keyring) == KeyringFingerprint(current.keyring))
        // Recorded: the next open is an ordinary one with no trial and no write.
        store.resetWriteCount()
        #expect(try journal.open().epoch == 4)
        #expect(store.writeCount == 0)
        #expect(try HeaderSlot.decode(try store.read(slot: recovered.slotIndex)).epoch == 4)
    }

    /// Trials are bounded: only the newest `maxRecoveryTrials` epochs are tried.
    @Test func trialRecoveryTriesAtMostTheNewestEpochs() throws {
        let keys = try KeyFiles(epochs: 1...6)
        let store = FaultyHeaderStore()
        let current = try HeaderJournal(store: store, source: keys.source).create(epoch: 1, blockSize: 4096)
        var legacy = current.slot
        legacy.epoch = HeaderSlot.unrecordedEpoch
        legacy.sequence += 1
        try legacy.seal(current.keyring, wrappingKey: keys.source.wrappingKey(epoch: 1, derivation: .direct))
        store.overwrite(slot: 1, with: try legacy.encoded())
        store.resetWriteCount()
        #expect {
            try HeaderJournal(store: store, source: keys.source, maxRecoveryTrials: 3).open()
        } throws: { error in
            guard case let JournalError.epochUnrecoverable(tried, reason) = error else { return false }
            return tried == [6, 5, 4] && reason.contains("3 older epochs not tried (at most 3 are)")
        }
        #expect(store.writeCount == 0)
        #expect(try HeaderJournal(store: store, source: keys.source).open().epoch == 1, "within the default bound it is found")
    }

    @Test func trialRecoveryWithNoMatchingKeyFailsWithoutWriting() throws {
        let keys = try KeyFiles(epochs: 1...3)
        let store = FaultyHeaderStore()
        let journal = HeaderJournal(store: store, source: keys.source)
        let current = try journal.create(epoch: 1, blockSize: 4096)
        var legacy = current.slot
        legacy.epoch = HeaderSlot.unrecordedEpoch
        legacy.sequence += 1
        try legacy.seal(current.keyring, wrappingKey: try SecretBytes.random(count: 32))
        store.overwrite(slot: 1, with: try legacy.encoded())
        store.resetWriteCount()
        #expect {
            try journal.open()
        } throws: { error in
            guard case let JournalError.epochUnrecoverable(tried, _) = error else { return false }
            return tried == [3, 2, 1]
        }
        #expect(store.writeCount == 0)
    }
}
