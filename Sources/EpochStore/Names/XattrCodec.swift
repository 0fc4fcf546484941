import EpochCrypto
import EpochFormat

/// Extended attributes in the `user.` namespace (docs/FORMAT.md §5.5): the name is stored as
/// `user.epochfs.` ‖ base64url(AES-256-SIV(name, AD = "epochfs/v1/xattr")); the value as a
/// storage envelope, block 0 of a pseudo-file whose id is derived from the plaintext name, so
/// a value moved under another name does not open.
public struct XattrCodec: Sendable {
    static let userPrefix = "user."
    public static let backingPrefix = "user.epochfs."
    static let nameAD = Array("epochfs/v1/xattr".utf8)

    private let keys: VolumeKeys
    private let siv: AESSIVKey

    public init(keys: VolumeKeys, nameKey: SecretBytes) throws {
        self.keys = keys
        siv = try AESSIVKey(nameKey)
    }

    /// The backing name of a `user.` attribute; nil for other namespaces (not stored).
    public func backingName(_ name: String) throws -> String? {
        guard name.hasPrefix(Self.userPrefix) else { return nil }
        return Self.backingPrefix + Base64URL.encode(try siv.seal(Array(name.utf8), aad: Self.nameAD))
    }

    /// The plaintext name of a backing attribute; nil for attributes that are not epochfs's.
    public func name(ofBacking backing: String) throws -> String? {
        guard backing.hasPrefix(Self.backingPrefix) else { return nil }
        let encoded = String(backing.dropFirst(Self.backingPrefix.count))
        guard let sealed = Base64URL.decode(encoded) else { throw NameError.notEncrypted(backing) }
        do {
            return String(decoding: try siv.open(sealed, aad: Self.nameAD), as: UTF8.self)
        } catch CryptoError.authenticationFailed {
            throw NameError.authenticationFailed(backing)
        }
    }

    func sealValue(_ value: [UInt8], name: String, epoch: Epoch) throws -> [UInt8] {
        let id = try pseudoFileID(name)
        return try StorageEnvelope.seal(value, keyID: epoch, fileKey: try key(epoch: epoch, id: id), location: location(id))
    }

    public func openValue(_ sealed: [UInt8], name: String) throws -> [UInt8] {
        let id = try pseudoFileID(name)
        return try StorageEnvelope.open(sealed, location: location(id)) { try self.key(epoch: $0, id: id) }
    }

    private func pseudoFileID(_ name: String) throws -> FileID {
        try FileID(SHA256.hash(Self.nameAD + Array(name.utf8)).prefix(FileID.byteCount))
    }

    private func key(epoch: Epoch, id: FileID) throws -> AESGCMKey {
        try keys.fileKey(epoch: epoch, fileID: id)
    }

    private func location(_ id: FileID) -> BlockLocation { BlockLocation(volumeID: keys.volumeID, fileID: id, blockIndex: 0) }
}
