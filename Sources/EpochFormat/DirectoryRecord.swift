import EpochCrypto

/// What a directory's last commit (an fsync of the directory that returned) found durable in
/// it (docs/FORMAT.md §5.6): every entry by the digest of its backing name, with its type and
/// the id of the object it named. It follows the 16-byte IV in `epochfs.diriv` (format 4 on),
/// authenticated with the volume's directory key and the IV, so it cannot be forged nor moved
/// to another directory. An entry missing from the directory, or naming another object, is
/// an integrity error; entries not in it (made since, or never committed) are not.
public struct DirectoryRecord: Equatable, Sendable {
    /// The first format with directory records, and their layout there.
    public static let version: UInt16 = 4
    /// The layout with the directory's attribute binding (format 5 on).
    public static let bindingVersion: UInt16 = 5
    static let keyLabel = Array("epochfs/v4/directory".utf8)
    static let fieldsSize = 16
    static let trailerSize = AESGCMKey.nonceSize + AESGCMKey.tagSize
    /// The smallest record: no entry.
    public static let minSize = fieldsSize + trailerSize
    /// More entries than any backing directory holds in practice (41 bytes each, 164 MB):
    /// a count past this is malformed, and no larger file is read.
    public static let maxEntries = 4_000_000
    public static let maxSize = minSize + AttributeBinding.size + maxEntries * Entry.size

    public struct Entry: Equatable, Sendable {
        static let size = 41
        /// The first 16 bytes of SHA-256 of the entry's backing name (ASCII).
        public let nameDigest: [UInt8]
        /// The entry's `d_type` (DT_REG, DT_DIR, DT_LNK, ...).
        public let type: UInt8
        /// A regular file's file id, a directory's IV, a symlink's target id; 16 zero bytes
        /// where nothing is bound (other types, a file with no durable record yet).
        public let objectID: [UInt8]
        /// For a regular file, a file record sequence that was durable at the commit: the file's
        /// record must have at least this one (an older copy of the file put back has less).
        /// 0 binds none.
        public let sequence: UInt64

        public init(nameDigest: [UInt8], type: UInt8, objectID: [UInt8], sequence: UInt64 = 0) {
            self.nameDigest = nameDigest
            self.type = type
            self.objectID = objectID
            self.sequence = sequence
        }

        public var bindsObject: Bool { objectID.contains { $0 != 0 } }
    }

    public var sequence: UInt64
    /// Sorted by `nameDigest`, no two alike.
    public private(set) var entries: [Entry]
    /// The directory's extended attributes: nil in the layout of format 4, which has none.
    public var attributes: AttributeBinding?

    public init(sequence: UInt64 = 0, entries: [Entry] = [], attributes: AttributeBinding? = nil) {
        self.sequence = sequence
        self.entries = entries.sorted { $0.nameDigest.lexicographicallyPrecedes($1.nameDigest) }
        self.attributes = attributes
    }

    public static let unbound = [UInt8](repeating: 0, count: 16)

    public static func nameDigest(_ backingName: String) -> [UInt8] { Array(SHA256.hash(Array(backingName.utf8)).prefix(16)) }

    public static func key(nameKey: SecretBytes, volumeID: VolumeID) throws -> AESGCMKey {
        try AESGCMKey(HKDF.sha256(key: nameKey, salt: volumeID.bytes, info: keyLabel, count: AESGCMKey.keySize))
    }

    public func entry(_ digest: [UInt8]) -> Entry? {
        var low = 0, high = entries.count
        while low < high {
            let middle = (low + high) / 2
            if entries[middle].nameDigest == digest { return entries[middle] }
            if entries[middle].nameDigest.lexicographicallyPrecedes(digest) { low = middle + 1 } else { high = middle }
        }
        return nil
    }

    /// This record without the entries of `digests`, or nil when it has none of them.
    public func removing(_ digests: [[UInt8]]) -> DirectoryRecord? {
        guard digests.contains(where: { entry($0) != nil }) else { return nil }
        let gone = Set(digests)
        return DirectoryRecord(sequence: sequence + 1, entries: entries.filter { !gone.contains($0.nameDigest) }, attributes: attributes)
    }

    /// `version ‖ reserved ‖ count ‖ sequence ‖ [attribute binding, version 5] ‖ entries ‖
    /// nonce ‖ tag`; the tag covers the directory's IV and every byte before the nonce.
    public func encoded(key: AESGCMKey, iv: [UInt8], nonce: [UInt8]? = nil) throws -> [UInt8] {
        var writer = ByteWriter(capacity: Self.minSize + AttributeBinding.size + entries.count * Entry.size)
        writer.append(attributes == nil ? Self.version : Self.bindingVersion)
        writer.append(UInt16(0))
        writer.append(UInt32(entries.count))
        writer.append(sequence)
        attributes?.encode(into: &writer)
        for entry in entries {
            writer.append(contentsOf: entry.nameDigest)
            writer.append(entry.type)
            writer.append(contentsOf: entry.objectID)
            writer.append(entry.sequence)
        }
        let nonce = try nonce ?? SecureRandom.bytes(AESGCMKey.nonceSize)
        let tag = try key.seal(nonce: nonce, aad: iv + writer.bytes, plaintext: [])
        writer.append(contentsOf: nonce)
        writer.append(contentsOf: tag)
        return writer.bytes
    }

    public static func decode(_ bytes: ArraySlice<UInt8>, key: AESGCMKey, iv: [UInt8]) throws(RecordError) -> DirectoryRecord {
        guard bytes.count >= minSize else { throw RecordError(.directory, .wrongSize(bytes.count)) }
        let fields = Array(bytes.dropLast(trailerSize))
        let trailer = Array(bytes.suffix(trailerSize))
        do {
            _ = try key.open(nonce: Array(trailer.prefix(AESGCMKey.nonceSize)), aad: iv + fields, sealed: Array(trailer.dropFirst(AESGCMKey.nonceSize)))
        } catch {
            throw RecordError(.directory, .authenticationFailed)
        }
        var reader = ByteReader(fields[...], what: "directory record")
        do {
            let version = try reader.readUInt16()
            guard version == Self.version || version == Self.bindingVersion, try reader.readUInt16() == 0 else {
                throw RecordError(.directory, .unknownVersion(version))
            }
            let count = Int(try reader.readUInt32())
            let sequence = try reader.readUInt64()
            let attributes = version == Self.bindingVersion ? try AttributeBinding.decode(from: &reader) : nil
            let fieldsSize = Self.fieldsSize + (attributes == nil ? 0 : AttributeBinding.size)
            guard count <= maxEntries, fields.count == fieldsSize + count * Entry.size else { throw RecordError(.directory, .malformed) }
            var entries: [Entry] = []
            entries.reserveCapacity(count)
            for _ in 0..<count {
                let digest = Array(try reader.read(16)), type = try reader.readUInt8(), id = Array(try reader.read(16))
                let sequence = try reader.readUInt64()
                if let last = entries.last, !last.nameDigest.lexicographicallyPrecedes(digest) { throw RecordError(.directory, .malformed) }
                entries.append(Entry(nameDigest: digest, type: type, objectID: id, sequence: sequence))
            }
            return DirectoryRecord(sequence: sequence, entries: entries, attributes: attributes)
        } catch let error as RecordError {
            throw error
        } catch {
            throw RecordError(.directory, .malformed)
        }
    }
}
