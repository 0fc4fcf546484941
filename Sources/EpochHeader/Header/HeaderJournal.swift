import EpochCrypto
import EpochFormat
import Logging
import Synchronization

/// The volume header as last committed: the newest valid slot and its opened keyring.
public struct VolumeHeader: Sendable {
    public let slot: HeaderSlot
    /// 0 (A) or 1 (B): where `slot` lives; the next commit goes to the other one.
    public let slotIndex: Int
    public let keyring: Keyring

    public var epoch: Epoch { slot.epoch }
    public var sequence: UInt64 { slot.sequence }
    public var volumeID: VolumeID { slot.volumeID }
}

public enum RekeyResult: Sendable {
    /// Already at the requested epoch: nothing was written.
    case alreadyAtEpoch(VolumeHeader)
    case rekeyed(from: Epoch, VolumeHeader)

    public var header: VolumeHeader {
        switch self {
        case let .alreadyAtEpoch(header), let .rekeyed(_, header): header
        }
    }
}

public enum JournalError: Error, Equatable, Sendable, CustomStringConvertible {
    case noValidSlot(slotA: String, slotB: String)
    /// The newest valid slot does not open with the key source's key for its epoch. There is no
    /// fallback to the older slot: that would silently undo a rekey.
    case wrongKey(epoch: Epoch)
    case epochBelowCurrent(current: Epoch, requested: Epoch)
    case reservedEpoch
    case inconsistentKeyring(slotEpoch: Epoch, keyringEpoch: Epoch)
    case epochUnrecoverable(tried: [Epoch], reason: String)
    case readBackMismatch(slot: Int)
    case epochNotInKeyring(Epoch)
    case retiringActiveEpoch(Epoch)

    public var description: String {
        switch self {
        case let .noValidSlot(a, b): "no valid header slot (A: \(a); B: \(b))"
        case let .wrongKey(epoch):
            "the key for epoch \(epoch) does not open the newest header slot (wrong key or tampered header); refusing to fall back to an older slot"
        case let .epochBelowCurrent(current, requested): "refusing to rekey to epoch \(requested): the volume is at epoch \(current)"
        case .reservedEpoch: "epoch 0 is reserved; epochs start at 1"
        case let .inconsistentKeyring(slotEpoch, keyringEpoch):
            "header slot says epoch \(slotEpoch) but its keyring's active epoch is \(keyringEpoch)"
        case let .epochUnrecoverable(tried, reason):
            "the header's epoch is not recorded and no key opened it (tried \(tried.map(String.init).joined(separator: ", "))): \(reason)"
        case let .readBackMismatch(slot): "header slot \(slot == 0 ? "A" : "B") did not read back as written"
        case let .epochNotInKeyring(epoch): "epoch \(epoch) is not in the keyring"
        case let .retiringActiveEpoch(epoch): "refusing to retire epoch \(epoch): it is the active epoch (rekey first)"
        }
    }
}

/// The header-swap rekey journal with ZFS change-key semantics (docs/FORMAT.md
/// §3.4–§3.6): every change is one commit that writes the inactive slot with
/// sequence+1, fsyncs, reads it back, and only then becomes the current header.
public final class HeaderJournal: Sendable {
    public let store: any HeaderStore
    public let source: any KeySource
    private let commits = Mutex(())
    private let logger = Logger(label: "epochfs.header")

    /// At most this many epochs are tried, newest first, to recover an unrecorded one: each
    /// trial may run a key command (with its own timeout) or derive a passphrase key.
    public let maxRecoveryTrials: Int

    public init(store: any HeaderStore, source: any KeySource, maxRecoveryTrials: Int = 32) {
        self.store = store
        self.source = source
        self.maxRecoveryTrials = maxRecoveryTrials
    }

    /// Writes the first header of a new volume (slot A, sequence 1) and makes it durable. A
    /// volume made with `clusterID` derives every epoch's raft DEK (docs/FORMAT.md §3.7).
    public func create(epoch: Epoch, blockSize: UInt32, volumeID: VolumeID? = nil, clusterID: ClusterID? = nil,
                       formatVersion: UInt16 = HeaderSlot.formatVersion) throws -> VolumeHeader {
        guard epoch != 0 else { throw JournalError.reservedEpoch }
        let derivation = try source.keyDerivationForNewEpoch()
        let secrets = try source.epochSecrets(epoch: epoch, derivation: derivation, clusterID: clusterID)
        let slot = HeaderSlot(volumeID: try volumeID ?? .random(), sequence: 0, epoch: epoch, blockSize: blockSize,
                              raftCutover: .max, keyDerivation: derivation, keySource: source.spec, formatVersion: formatVersion)
        let keyring = try Keyring.create(epoch: epoch, clusterID: clusterID, clusterSecret: secrets.clusterSecret)
        return try commit(slot, keyring: keyring, wrappingKey: secrets.wrappingKey, replacing: nil)
    }

    /// Opens the newest valid slot, failing closed if it does not open. When its epoch is not
    /// recorded, recovers it by side-effect-free trial decryption and records it.
    public func open() throws -> VolumeHeader {
        try withCommitLock { try openCurrent().header }
    }

    /// The change-key: refuse a lower epoch, do nothing at the current one, otherwise add
    /// new DEKs for `epoch` (a cluster member's raft DEK derived from the epoch's cluster
    /// secret), reseal the keyring under its wrapping key and commit.
    public func rekey(to epoch: Epoch) throws -> RekeyResult {
        try withCommitLock {
            let current = try openCurrent()
            let from = current.header.epoch
            if epoch < from { throw JournalError.epochBelowCurrent(current: from, requested: epoch) }
            if epoch == from { return .alreadyAtEpoch(current.header) }
            let derivation = try source.keyDerivationForNewEpoch()
            let secrets = try source.epochSecrets(epoch: epoch, derivation: derivation, clusterID: current.header.keyring.clusterID)
            var slot = current.header.slot
            slot.epoch = epoch
            slot.keyDerivation = derivation
            let keyring = try current.header.keyring.adding(epoch: epoch, clusterSecret: secrets.clusterSecret)
            let header = try commit(slot, keyring: keyring, wrappingKey: secrets.wrappingKey, replacing: current.header)
            logger.info("rekeyed", metadata: ["from": "\(from)", "to": "\(epoch)", "sequence": "\(header.sequence)"])
            return .rekeyed(from: from, header)
        }
    }

    /// Sets the raft cutover index in one header commit (no write when unchanged).
    public func setRaftCutover(_ index: UInt64) throws -> VolumeHeader {
        try setField(\.raftCutover, to: index)
    }

    /// Drops the DEKs of `epoch` in one header commit (no write when already retired); its copy
    /// over the other slot drops them there too. The caller has made sure nothing names the
    /// epoch any more (`Retirement`); `verify` runs under the commit lock against the header
    /// about to be changed, so that check and commit see the same keyring.
    public func retire(epoch: Epoch, verify: (VolumeHeader) throws -> Void = { _ in }) throws -> VolumeHeader {
        try withCommitLock {
            let current = try openCurrent()
            let keyring = current.header.keyring
            guard let entry = keyring.epochs.first(where: { $0.epoch == epoch }) else {
                throw JournalError.epochNotInKeyring(epoch)
            }
            guard entry.state != .active else { throw JournalError.retiringActiveEpoch(epoch) }
            guard entry.state != .retired else { return current.header }
            try verify(current.header)
            let retired = try commit(current.header.slot, keyring: try keyring.retiring(epoch: epoch),
                                     wrappingKey: current.wrappingKey, replacing: current.header)
            logger.info("retired", metadata: ["epoch": "\(epoch)", "sequence": "\(retired.sequence)"])
            return retired
        }
    }

    /// Sets the volume's format version in one header commit (no write when unchanged): the last
    /// step of `FormatUpgrade`, once everything the new format needs is on disk.
    public func setFormatVersion(_ version: UInt16) throws -> VolumeHeader {
        try setField(\.formatVersion, to: version)
    }

    /// One clear field of the slot set to `value` in one header commit; none when it has it.
    private func setField<Value: Equatable>(_ field: WritableKeyPath<HeaderSlot, Value>, to value: Value) throws -> VolumeHeader {
        try withCommitLock {
            let current = try openCurrent()
            guard current.header.slot[keyPath: field] != value else { return current.header }
            var slot = current.header.slot
            slot[keyPath: field] = value
            return try commit(slot, keyring: current.header.keyring, wrappingKey: current.wrappingKey, replacing: current.header)
        }
    }

    /// Commits the current header again, unchanged but for the sequence, into the other slot:
    /// what `fsck --repair` does about a torn or damaged slot.
    public func recommit() throws -> VolumeHeader {
        try withCommitLock {
            let current = try openCurrent()
            return try commit(current.header.slot, keyring: current.header.keyring, wrappingKey: current.wrappingKey,
                              replacing: current.header)
        }
    }

    // MARK: - Internals

    private struct Opened {
        let header: VolumeHeader
        let wrappingKey: SecretBytes
    }

    private func withCommitLock<R>(_ body: () throws -> R) throws -> R {
        // One commit at a time in this process (Mutex) and across processes (the store's lock).
        var result: Result<R, any Error>?
        commits.withLock { _ in result = Result { try store.withExclusiveLock(body) } }
        return try result!.get()
    }

    /// Reads both slots from the store (the source of truth, never a cache) and opens the newest.
    private func openCurrent() throws -> Opened {
        let (index, slot) = try Self.newestValidSlot(in: store)
        if slot.epoch == HeaderSlot.unrecordedEpoch { return try recoverEpoch(of: slot, at: index) }
        let key = try source.wrappingKey(epoch: slot.epoch, derivation: slot.keyDerivation)
        let keyring: Keyring
        do {
            keyring = try slot.openKeyring(wrappingKey: key)
        } catch HeaderSlotError.wrongKey {
            throw JournalError.wrongKey(epoch: slot.epoch)
        }
        guard keyring.activeEpoch == slot.epoch else {
            throw JournalError.inconsistentKeyring(slotEpoch: slot.epoch, keyringEpoch: keyring.activeEpoch)
        }
        return Opened(header: VolumeHeader(slot: slot, slotIndex: index, keyring: keyring), wrappingKey: key)
    }

    /// The valid slot with the highest sequence, and where it lives; unopened.
    package static func newestValidSlot(in store: any HeaderStore) throws -> (index: Int, slot: HeaderSlot) {
        var problems = ["", ""]
        var valid: [(Int, HeaderSlot)] = []
        for index in 0..<2 {
            do {
                valid.append((index, try HeaderSlot.decode(try store.read(slot: index))))
            } catch {
                problems[index] = "\(error)"
            }
        }
        // Equal sequences only arise from a copy of one slot over the other; either is current.
        guard let newest = valid.max(by: { $0.1.sequence < $1.1.sequence }) else {
            throw JournalError.noValidSlot(slotA: problems[0], slotB: problems[1])
        }
        return newest
    }

    /// Tries the key source's epochs newest first. A trial only decrypts in memory; the one
    /// write is the ordinary commit that records the epoch found.
    private func recoverEpoch(of slot: HeaderSlot, at index: Int) throws -> Opened {
        guard let candidates = try source.candidateEpochs() else {
            throw JournalError.epochUnrecoverable(tried: [], reason: "key source '\(source.spec)' cannot list its epochs")
        }
        var failures: [String] = []
        let trials = Array(candidates.prefix(maxRecoveryTrials))
        for epoch in trials {
            let key: SecretBytes
            let keyring: Keyring
            do {
                key = try source.wrappingKey(epoch: epoch, derivation: slot.keyDerivation)
                keyring = try slot.openKeyring(wrappingKey: key)
            } catch {
                failures.append("\(epoch): \(error)")
                continue
            }
            guard keyring.activeEpoch == epoch else {
                throw JournalError.inconsistentKeyring(slotEpoch: epoch, keyringEpoch: keyring.activeEpoch)
            }
            logger.warning("recovered unrecorded header epoch by trial decryption", metadata: ["epoch": "\(epoch)"])
            var recorded = slot
            recorded.epoch = epoch
            let unrecorded = VolumeHeader(slot: slot, slotIndex: index, keyring: keyring)
            let header = try commit(recorded, keyring: keyring, wrappingKey: key, replacing: unrecorded)
            return Opened(header: header, wrappingKey: key)
        }
        let untried = candidates.count - trials.count
        let reason = (failures.isEmpty ? "no candidates" : failures.joined(separator: "; "))
            + (untried > 0 ? "; \(untried) older epochs not tried (at most \(maxRecoveryTrials) are)" : "")
        throw JournalError.epochUnrecoverable(tried: trials, reason: reason)
    }

    /// Seals `keyring` into `slot` with the next sequence, writes the inactive slot, fsyncs,
    /// and reads it back. Only a slot that read back intact is returned as current. Then the
    /// same bytes go over the other slot (fsync'd), so that once a commit returned, damage to
    /// either slot can no longer bring back the header before it (docs/FORMAT.md §3.6).
    private func commit(_ slot: HeaderSlot, keyring: Keyring, wrappingKey: SecretBytes,
                        replacing current: VolumeHeader?) throws -> VolumeHeader {
        var next = slot
        next.sequence = (current?.sequence ?? 0) + 1
        try next.seal(keyring, wrappingKey: wrappingKey)
        let bytes = try next.encoded()
        let target = current.map { 1 - $0.slotIndex } ?? 0
        try store.write(slot: target, bytes: bytes)
        try store.sync()
        guard try store.read(slot: target) == bytes else { throw JournalError.readBackMismatch(slot: target) }
        try store.write(slot: 1 - target, bytes: bytes)
        try store.sync()
        return VolumeHeader(slot: next, slotIndex: target, keyring: keyring)
    }
}
