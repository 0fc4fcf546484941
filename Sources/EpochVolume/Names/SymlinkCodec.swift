import EpochCrypto
import EpochFormat

/// Symlink targets (docs/FORMAT.md §5.3): the backing symlink's target is
/// `base64url(target_id(16) ‖ storage envelope of the plaintext target)`, the envelope sealed
/// at block index 0 with the per-file key of a random 16-byte target id, so it is
/// authenticated like file content and tied to this volume.
public struct SymlinkCodec: Sendable {
    /// Longest backing symlink target Linux stores.
    public static let maxBackingTarget = 4095
    /// Longest plaintext target that fits: base64url(16 + 34 + n) ≤ 4095.
    public static let maxTarget = (maxBackingTarget * 3 / 4) - FileID.byteCount - Envelope.overhead

    private let keys: VolumeKeys

    public init(keys: VolumeKeys) { self.keys = keys }

    public func encrypt(_ target: [UInt8]) throws -> String {
        let targetID = try FileID.random()
        let epoch = keys.activeEpoch
        let key = try AESGCMKey(StorageEnvelope.fileKey(storageDEK: try keys.storageDEK(epoch: epoch),
                                                        volumeID: keys.volumeID, fileID: targetID))
        let envelope = try StorageEnvelope.seal(target, keyID: epoch, fileKey: key, location: location(targetID))
        return Base64URL.encode(targetID.bytes + envelope)
    }

    public func decrypt(_ backingTarget: [UInt8]) throws -> [UInt8] {
        guard let raw = Base64URL.decode(String(decoding: backingTarget, as: UTF8.self)), raw.count >= FileID.byteCount + Envelope.overhead else {
            throw NameError.notEncrypted(String(decoding: backingTarget, as: UTF8.self))
        }
        let targetID = try FileID(raw.prefix(FileID.byteCount))
        return try StorageEnvelope.open(Array(raw.dropFirst(FileID.byteCount)), location: location(targetID)) { epoch in
            try AESGCMKey(StorageEnvelope.fileKey(storageDEK: try keys.storageDEK(epoch: epoch),
                                                  volumeID: keys.volumeID, fileID: targetID))
        }
    }

    private func location(_ targetID: FileID) -> BlockLocation {
        BlockLocation(volumeID: keys.volumeID, fileID: targetID, blockIndex: 0)
    }
}
