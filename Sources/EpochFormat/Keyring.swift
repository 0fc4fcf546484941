import EpochCrypto

/// What an epoch's keys may still do.
public enum KeyState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// The newest epoch: new blocks and raft entries are sealed with its DEKs.
    case active = 1
    /// An older epoch: its DEKs still open what was sealed under it, never seal anything new.
    case readOnly = 2
    /// Keys dropped: anything still naming this epoch fails closed.
    case retired = 3

    public var description: String {
        switch self {
        case .active: "active"
        case .readOnly: "read-only"
        case .retired: "retired"
        }
    }
}

/// The data encryption keys of one epoch (nil once retired).
public struct EpochKeys: Sendable {
    public let epoch: Epoch
    public let state: KeyState
    public let storageDEK: SecretBytes?
    public let raftDEK: SecretBytes?
}

/// The volume's secrets: the name key (fixed for the volume's life, like ZFS's master key) and
/// per epoch a storage DEK and a raft DEK. Sealed under the wrapping key of the current epoch
/// inside the header; see docs/FORMAT.md §3.3.
///
/// A volume made without a cluster id draws each raft DEK at random. With one (a member of a raft
/// cluster), each new epoch's raft DEK is derived from the cluster secret its key source yields
/// (docs/FORMAT.md §3.7), so every member holds the same one.
public struct Keyring: Sendable {
    /// Version 1: no cluster id, random raft DEKs. Version 2: a cluster id, derived raft DEKs.
    public static let formatVersion: UInt8 = 1
    public static let clusterFormatVersion: UInt8 = 2
    public static let dekSize = 32
    public static let nameKeySize = AESSIVKey.keySize

    public let nameKey: SecretBytes
    /// Set at `init` and kept for the volume's life; nil on a volume that is no cluster member.
    public let clusterID: ClusterID?
    /// Ascending by epoch; the last entry is the only active one.
    public let epochs: [EpochKeys]

    init(nameKey: SecretBytes, clusterID: ClusterID?, epochs: [EpochKeys]) throws(FormatError) {
        guard nameKey.count == Self.nameKeySize else {
            throw FormatError.invalid(what: "keyring", reason: "name key is \(nameKey.count) bytes")
        }
        guard let last = epochs.last, last.state == .active,
              epochs.dropLast().allSatisfy({ $0.state != .active }) else {
            throw FormatError.invalid(what: "keyring", reason: "the newest epoch, and only it, must be active")
        }
        for (older, newer) in zip(epochs, epochs.dropFirst()) where older.epoch >= newer.epoch {
            throw FormatError.invalid(what: "keyring", reason: "epochs are not strictly ascending")
        }
        for entry in epochs {
            guard entry.epoch != 0 else { throw FormatError.invalid(what: "keyring", reason: "epoch 0 is reserved") }
            let hasKeys = entry.storageDEK != nil && entry.raftDEK != nil
            guard hasKeys == (entry.state != .retired) else {
                throw FormatError.invalid(what: "keyring", reason: "epoch \(entry.epoch) keys do not match its state")
            }
        }
        self.nameKey = nameKey
        self.clusterID = clusterID
        self.epochs = epochs
    }

    /// A new keyring for a new volume: a fresh name key and fresh DEKs for `epoch`, its raft
    /// DEK derived from `clusterSecret` when the volume is a member of `clusterID`.
    public static func create(epoch: Epoch, clusterID: ClusterID? = nil, clusterSecret: SecretBytes? = nil) throws -> Keyring {
        try Keyring(nameKey: try SecretBytes.random(count: nameKeySize), clusterID: clusterID,
                    epochs: [try newKeys(epoch: epoch, clusterID: clusterID, clusterSecret: clusterSecret)])
    }

    public var activeEpoch: Epoch { epochs.last!.epoch }
    public var active: EpochKeys { epochs.last! }

    /// The change-key step: `epoch` (above the active one) becomes active with new DEKs and
    /// every older epoch that still has keys becomes read-only. A cluster member's new raft DEK
    /// is derived from `clusterSecret`, the secret its key source yields for `epoch`.
    public func adding(epoch: Epoch, clusterSecret: SecretBytes? = nil) throws -> Keyring {
        precondition(epoch > activeEpoch, "a new epoch must be above the active one")
        let demoted = epochs.map { entry in
            entry.state == .active
                ? EpochKeys(epoch: entry.epoch, state: .readOnly, storageDEK: entry.storageDEK, raftDEK: entry.raftDEK)
                : entry
        }
        return try Keyring(nameKey: nameKey, clusterID: clusterID,
                           epochs: demoted + [try Self.newKeys(epoch: epoch, clusterID: clusterID, clusterSecret: clusterSecret)])
    }

    /// `epoch` (read-only, not the active one) with its DEKs dropped: anything still naming it
    /// fails closed with `retiredKey`. An epoch retired already stays as it is.
    public func retiring(epoch: Epoch) throws -> Keyring {
        precondition(epoch != activeEpoch, "the active epoch is never retired")
        return try Keyring(nameKey: nameKey, clusterID: clusterID, epochs: epochs.map { entry in
            entry.epoch == epoch ? EpochKeys(epoch: epoch, state: .retired, storageDEK: nil, raftDEK: nil) : entry
        })
    }

    public func keys(for epoch: Epoch) throws(EnvelopeError) -> EpochKeys {
        guard let entry = epochs.first(where: { $0.epoch == epoch }) else { throw .unknownKeyID(epoch) }
        guard entry.state != .retired else { throw .retiredKey(epoch) }
        return entry
    }

    /// A random storage DEK; the raft DEK random too, or derived on a cluster member.
    private static func newKeys(epoch: Epoch, clusterID: ClusterID?, clusterSecret: SecretBytes?) throws -> EpochKeys {
        precondition((clusterID == nil) == (clusterSecret == nil), "a cluster member's raft DEK needs its cluster secret, and only it")
        let raftDEK = try clusterID.map { try $0.raftDEK(clusterSecret: clusterSecret!, epoch: epoch) }
            ?? SecretBytes.random(count: dekSize)
        return EpochKeys(epoch: epoch, state: .active, storageDEK: try SecretBytes.random(count: dekSize), raftDEK: raftDEK)
    }

    // MARK: Encoding

    /// `version(1) ‖ name_key(64) ‖ [cluster_id_length(1) ‖ cluster_id] ‖ count(BE16) ‖
    /// count × (epoch(BE32) ‖ state(1) ‖ [storage_dek(32) ‖ raft_dek(32)])`, the cluster id
    /// present in version 2 only, the DEKs unless the state is retired.
    public func encoded() -> SecretBytes {
        let clusterSize = clusterID.map { 1 + $0.bytes.count } ?? 0
        let size = 1 + Self.nameKeySize + clusterSize + 2
            + epochs.reduce(0) { $0 + 5 + ($1.state == .retired ? 0 : 2 * Self.dekSize) }
        return SecretBytes(count: size) { out in
            var offset = 0
            func put(_ bytes: UnsafeRawBufferPointer) {
                UnsafeMutableRawBufferPointer(rebasing: out[offset..<offset + bytes.count]).copyMemory(from: bytes)
                offset += bytes.count
            }
            func put<T: FixedWidthInteger>(integer: T) { withUnsafeBytes(of: integer.bigEndian) { put($0) } }
            put(integer: clusterID == nil ? Self.formatVersion : Self.clusterFormatVersion)
            nameKey.withUnsafeBytes { put($0) }
            if let clusterID {
                put(integer: UInt8(clusterID.bytes.count))
                clusterID.bytes.withUnsafeBytes { put($0) }
            }
            put(integer: UInt16(epochs.count))
            for entry in epochs {
                put(integer: entry.epoch.rawValue)
                put(integer: entry.state.rawValue)
                entry.storageDEK?.withUnsafeBytes { put($0) }
                entry.raftDEK?.withUnsafeBytes { put($0) }
            }
            precondition(offset == size)
        }
    }

    public static func decode(_ encoded: SecretBytes) throws -> Keyring {
        try encoded.withUnsafeBytes { raw in
            var offset = 0
            func take(_ count: Int) throws(FormatError) -> UnsafeRawBufferPointer {
                guard count <= raw.count - offset else {
                    throw FormatError.truncated(what: "keyring", needed: count, available: raw.count - offset)
                }
                defer { offset += count }
                return UnsafeRawBufferPointer(rebasing: raw[offset..<offset + count])
            }
            func integer<T: FixedWidthInteger>(_: T.Type) throws(FormatError) -> T {
                try take(MemoryLayout<T>.size).reduce(T(0)) { ($0 << 8) | T($1) }
            }
            let version = try integer(UInt8.self)
            guard version == formatVersion || version == clusterFormatVersion else {
                throw FormatError.invalid(what: "keyring", reason: "unsupported version \(version)")
            }
            let nameKey = SecretBytes(copying: try take(nameKeySize))
            var clusterID: ClusterID?
            if version == clusterFormatVersion {
                clusterID = try ClusterID(bytes: Array(try take(Int(try integer(UInt8.self)))))
            }
            let count = try integer(UInt16.self)
            var epochs: [EpochKeys] = []
            for _ in 0..<count {
                let epoch = Epoch(rawValue: try integer(UInt32.self))
                let rawState = try integer(UInt8.self)
                guard let state = KeyState(rawValue: rawState) else {
                    throw FormatError.invalid(what: "keyring", reason: "epoch \(epoch) has unknown state \(rawState)")
                }
                let storage = state == .retired ? nil : SecretBytes(copying: try take(dekSize))
                let raft = state == .retired ? nil : SecretBytes(copying: try take(dekSize))
                epochs.append(EpochKeys(epoch: epoch, state: state, storageDEK: storage, raftDEK: raft))
            }
            guard offset == raw.count else {
                throw FormatError.invalid(what: "keyring", reason: "\(raw.count - offset) trailing bytes")
            }
            return try Keyring(nameKey: nameKey, clusterID: clusterID, epochs: epochs)
        }
    }
}
