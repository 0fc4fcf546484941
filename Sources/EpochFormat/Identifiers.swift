import EpochCrypto

/// A 16-byte random identifier: a volume id or a file id.
public protocol RandomIdentifier: Hashable, Sendable, CustomStringConvertible {
    var bytes: [UInt8] { get }
    init(validated bytes: [UInt8])
}

extension RandomIdentifier {
    public static var byteCount: Int { 16 }

    public init<Bytes: Collection<UInt8>>(_ bytes: Bytes) throws(FormatError) {
        guard bytes.count == Self.byteCount else {
            throw FormatError.invalid(what: "\(Self.self)", reason: "must be \(Self.byteCount) bytes, got \(bytes.count)")
        }
        self.init(validated: Array(bytes))
    }

    public static func random() throws -> Self { Self(validated: try SecureRandom.bytes(byteCount)) }

    public var description: String { bytes.hexString }
}

public struct VolumeID: RandomIdentifier {
    public let bytes: [UInt8]
    public init(validated bytes: [UInt8]) { self.bytes = bytes }
}

public struct FileID: RandomIdentifier {
    public let bytes: [UInt8]
    public init(validated bytes: [UInt8]) { self.bytes = bytes }
}

/// The number of one generation of a volume's keys (docs/FORMAT.md §3.3): each rekey makes a
/// higher one active. A key id is an `Epoch` too, not a type of its own: an envelope's key_id
/// names the epoch whose DEK sealed it (§2.1), and every lookup from key id to key is one by
/// epoch; where the bytes are an envelope's key_id, the field keeps the name `keyID`.
/// Printed, logged and coded (RawRepresentable's Codable) as the bare number; 0 is reserved (no key, "not
/// recorded" in a header slot).
public struct Epoch: RawRepresentable, Hashable, Comparable, Sendable, Codable, CustomStringConvertible,
    ExpressibleByIntegerLiteral {
    public let rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(integerLiteral value: UInt32) { rawValue = value }

    /// An epoch named in text (a command's argument, a control command, an epoch source's
    /// value): decimal as `UInt32` reads it; nil otherwise. 0 parses: each caller says what the
    /// reserved value means to it.
    public init?(parsing text: some StringProtocol) {
        guard let value = UInt32(text) else { return nil }
        rawValue = value
    }

    public static func < (lhs: Epoch, rhs: Epoch) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { rawValue.description }
}

/// Names the raft cluster a volume belongs to (docs/FORMAT.md §3.7): every member volume with
/// the same cluster id and the same key source derives the same raft DEK for each epoch, so
/// an entry the leader sealed opens on every follower. Not secret; compared byte for byte.
public struct ClusterID: Hashable, Sendable, CustomStringConvertible {
    public static let maxLength = 64
    static let raftKeyLabel = Array("epochfs/v1/raft".utf8)

    /// 1 to 64 printable ASCII bytes (0x21–0x7e): printed by `info` as it is.
    public let bytes: [UInt8]

    public init(_ name: some StringProtocol) throws(FormatError) {
        try self.init(bytes: Array(name.utf8))
    }

    init(bytes: [UInt8]) throws(FormatError) {
        guard (1...Self.maxLength).contains(bytes.count), bytes.allSatisfy({ (0x21...0x7e).contains($0) }) else {
            throw FormatError.invalid(what: "cluster id", reason: "must be 1 to \(Self.maxLength) printable ASCII characters without spaces")
        }
        self.bytes = bytes
    }

    public var description: String { String(decoding: bytes, as: UTF8.self) }

    /// `HKDF-SHA256(IKM = cluster secret of epoch, salt = cluster id, info = "epochfs/v1/raft" ‖ epoch BE32, L = 32)`.
    public func raftDEK(clusterSecret: SecretBytes, epoch: Epoch) throws -> SecretBytes {
        try HKDF.sha256(key: clusterSecret, salt: bytes, info: Self.raftKeyLabel + withUnsafeBytes(of: epoch.rawValue.bigEndian, Array.init),
                        count: AESGCMKey.keySize)
    }

    /// The scrypt salt that makes a passphrase into the cluster secret, the same on every member:
    /// `"epochfs/v1/raft" ‖ cluster id` (the slot's own salt is random per volume).
    public var passphraseSalt: [UInt8] { Self.raftKeyLabel + bytes }
}
