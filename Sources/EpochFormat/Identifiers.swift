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
    public func raftDEK(clusterSecret: SecretBytes, epoch: UInt32) throws -> SecretBytes {
        try HKDF.sha256(key: clusterSecret, salt: bytes, info: Self.raftKeyLabel + withUnsafeBytes(of: epoch.bigEndian, Array.init),
                        count: AESGCMKey.keySize)
    }

    /// The scrypt salt that makes a passphrase into the cluster secret, the same on every member:
    /// `"epochfs/v1/raft" ‖ cluster id` (the slot's own salt is random per volume).
    public var passphraseSalt: [UInt8] { Self.raftKeyLabel + bytes }
}
