import EpochCrypto

/// The backing half of a volume's anchor (docs/FORMAT.md §3.8): how many anchor rounds the
/// volume has been through. A mount with anchoring on ends every fsync it acknowledges with a
/// round that raises this sequence, durably, and then the machine's own copy of it, kept
/// outside the backing dir. A backing dir whose sequence is below the machine's copy is an
/// older copy of the volume put back. Authenticated with a key of its own derived from the
/// name key (a rekey leaves it as it is) and the volume id, so it cannot be forged nor taken
/// from another volume.
public struct AnchorRecord: Equatable, Sendable {
    public static let version: UInt16 = 1
    static let keyLabel = Array("epochfs/v4/anchor".utf8)
    static let fieldsSize = 12
    public static let size = fieldsSize + AESGCMKey.nonceSize + AESGCMKey.tagSize

    public var sequence: UInt64

    public init(sequence: UInt64) { self.sequence = sequence }

    public static func key(nameKey: SecretBytes, volumeID: VolumeID) throws -> AESGCMKey {
        try AESGCMKey(HKDF.sha256(key: nameKey, salt: volumeID.bytes, info: keyLabel, count: AESGCMKey.keySize))
    }

    /// `version ‖ reserved ‖ sequence ‖ nonce ‖ tag`; the tag covers the volume id and the
    /// fields.
    public func encoded(key: AESGCMKey, volumeID: VolumeID, nonce: [UInt8]? = nil) throws -> [UInt8] {
        var writer = ByteWriter(capacity: Self.size)
        writer.append(Self.version)
        writer.append(UInt16(0))
        writer.append(sequence)
        let nonce = try nonce ?? SecureRandom.bytes(AESGCMKey.nonceSize)
        let tag = try key.seal(nonce: nonce, aad: volumeID.bytes + writer.bytes, plaintext: [])
        writer.append(contentsOf: nonce)
        writer.append(contentsOf: tag)
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8], key: AESGCMKey, volumeID: VolumeID) throws(RecordError) -> AnchorRecord {
        guard bytes.count == size else { throw RecordError(.anchor, .wrongSize(bytes.count)) }
        let fields = Array(bytes.prefix(fieldsSize))
        let nonce = Array(bytes[fieldsSize..<(fieldsSize + AESGCMKey.nonceSize)])
        do {
            _ = try key.open(nonce: nonce, aad: volumeID.bytes + fields, sealed: Array(bytes.suffix(AESGCMKey.tagSize)))
        } catch {
            throw RecordError(.anchor, .authenticationFailed)
        }
        var reader = ByteReader(fields[...], what: "anchor record")
        do {
            let version = try reader.readUInt16()
            guard version == Self.version, try reader.readUInt16() == 0 else { throw RecordError(.anchor, .unknownVersion(version)) }
            return AnchorRecord(sequence: try reader.readUInt64())
        } catch let error as RecordError {
            throw error
        } catch {
            throw RecordError(.anchor, .malformed)
        }
    }
}
