import EpochCrypto

/// What an object's record (a file record, §6.2, or a directory record, §5.6; format 5 on)
/// says of the object's extended attributes (docs/FORMAT.md §5.5): the digest of the set a
/// commit found durable, and the digest of the set a change under way will leave. Any other set
/// — a value put back from an older one, copied from another object, removed or added — is an
/// integrity error. Zeros bind nothing: records of earlier formats, and records not yet
/// committed in format 5.
public struct AttributeBinding: Equatable, Sendable {
    public static let digestSize = 16
    /// Two digests, as stored in a record.
    public static let size = 2 * digestSize
    public static let noDigest = [UInt8](repeating: 0, count: digestSize)
    public static let unbound = AttributeBinding(committed: noDigest, pending: noDigest)

    /// The digest of the set the last commit made durable; zeros: nothing bound.
    public let committed: [UInt8]
    /// The digest of the set a change began after that commit will leave; zeros: none.
    public let pending: [UInt8]

    public init(committed: [UInt8], pending: [UInt8] = AttributeBinding.noDigest) {
        precondition(committed.count == Self.digestSize && pending.count == Self.digestSize)
        self.committed = committed
        self.pending = pending
    }

    public var isBound: Bool { committed != Self.noDigest }

    /// Whether the object may hold the set of digest `digest`.
    public func accepts(_ digest: [UInt8]) -> Bool {
        !isBound || digest == committed || (pending != Self.noDigest && digest == pending)
    }

    /// Before a change that will leave the set of digest `next`: the set of digest `current`,
    /// now durable, is the committed one, and `next` the one under way.
    public func changing(from current: [UInt8], to next: [UInt8]) -> AttributeBinding {
        AttributeBinding(committed: current, pending: next == current ? Self.noDigest : next)
    }

    /// After a sync that made the set of digest `found` durable (read before it began): that
    /// set is committed; a change still under way (a pending digest other than `found`) stays
    /// pending, since its record was written before the set was read.
    public func committing(_ found: [UInt8]) -> AttributeBinding {
        AttributeBinding(committed: found, pending: pending == found ? Self.noDigest : pending)
    }

    /// The digest of a set of stored attributes, each its backing name and stored value
    /// bytes: the first 16 bytes of SHA-256 over the attributes in the byte order of their
    /// names, each `BE16 name length ‖ name ‖ BE32 value length ‖ value`.
    public static func digest(of attributes: [(name: String, value: [UInt8])]) -> [UInt8] {
        var writer = ByteWriter(capacity: 64)
        for (name, value) in attributes.sorted(by: { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }) {
            writer.append(UInt16(name.utf8.count))
            writer.append(contentsOf: Array(name.utf8))
            writer.append(UInt32(value.count))
            writer.append(contentsOf: value)
        }
        return Array(SHA256.hash(writer.bytes).prefix(digestSize))
    }

    func encode(into writer: inout ByteWriter) {
        writer.append(contentsOf: committed)
        writer.append(contentsOf: pending)
    }

    static func decode(from reader: inout ByteReader) throws -> AttributeBinding {
        let committed = Array(try reader.read(digestSize)), pending = Array(try reader.read(digestSize))
        return AttributeBinding(committed: committed, pending: pending)
    }
}
