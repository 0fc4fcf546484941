import EpochCrypto
import EpochFormat

/// Symlink targets (docs/FORMAT.md §5.4): a sealed target is
/// `target_id(16) ‖ storage envelope of the plaintext target`, the envelope sealed at block
/// index 0 with the per-file key of a random 16-byte target id, so it is authenticated like
/// file content and tied to this volume. The backing symlink holds it in base64url; one too
/// long for a symlink (over 4095 bytes) is kept in `epochfs.links/<base64url(SHA-256)>` and
/// the backing symlink points there.
public struct SymlinkCodec: Sendable {
    /// Longest backing symlink target Linux stores.
    static let maxBackingTarget = 4095
    /// Longest target a symlink may have (Linux's PATH_MAX − 1).
    static let maxTarget = 4095
    public static let sideDirectory = "epochfs.links"
    public static let sidePrefix = "epochfs.links/"

    private let keys: VolumeKeys

    public init(keys: VolumeKeys) { self.keys = keys }

    /// The backing target for `target` sealed under `epoch`, and for a long one the side file
    /// (name, bytes) to write under `epochfs.links/` first. A reseal keeps the symlink's
    /// `targetID`, which its directory's record binds it by; a new symlink gets a fresh one.
    public func encrypt(_ target: [UInt8], epoch: Epoch, targetID: FileID? = nil) throws
        -> (backingTarget: String, sideFile: (name: String, bytes: [UInt8])?) {
        let sealed = try seal(target, epoch: epoch, targetID: targetID ?? FileID.random())
        let inline = Base64URL.encode(sealed)
        if inline.utf8.count <= Self.maxBackingTarget { return (inline, nil) }
        let name = Base64URL.encode(SHA256.hash(sealed))
        return (Self.sidePrefix + name, (name, sealed))
    }

    /// Whether a backing target points into `epochfs.links/`; the side file's name if so.
    public static func sideFileName(_ backingTarget: [UInt8]) -> String? {
        let text = String(decoding: backingTarget, as: UTF8.self)
        return text.hasPrefix(sidePrefix) ? String(text.dropFirst(sidePrefix.count)) : nil
    }

    /// The sealed target a link file holds: only one whose hash is the file's name, so link
    /// files swapped between symlinks are an error, never another symlink's target.
    public static func sealedTarget(ofSideFile name: String, bytes: [UInt8]) throws -> [UInt8] {
        guard Base64URL.encode(SHA256.hash(bytes)) == name else { throw NameError.sideFileOfAnotherEntry(sidePrefix + name) }
        return bytes
    }

    private func seal(_ target: [UInt8], epoch: Epoch, targetID: FileID) throws -> [UInt8] {
        let key = try keys.fileKey(epoch: epoch, fileID: targetID)
        return targetID.bytes + (try StorageEnvelope.seal(target, keyID: epoch, fileKey: key, location: location(targetID)))
    }

    /// Opens a sealed target: the decoded inline target, or a side file's bytes.
    public func decrypt(sealed raw: [UInt8]) throws -> [UInt8] {
        guard raw.count >= FileID.byteCount + Envelope.overhead else { throw NameError.notEncrypted("symlink target") }
        let targetID = try FileID(raw.prefix(FileID.byteCount))
        return try StorageEnvelope.open(Array(raw.dropFirst(FileID.byteCount)), location: location(targetID)) { epoch in
            try keys.fileKey(epoch: epoch, fileID: targetID)
        }
    }

    /// The sealed target an inline backing target encodes.
    public static func decode(inline backingTarget: [UInt8]) throws -> [UInt8] {
        guard let raw = Base64URL.decode(String(decoding: backingTarget, as: UTF8.self)) else {
            throw NameError.notEncrypted(String(decoding: backingTarget, as: UTF8.self))
        }
        return raw
    }

    /// The epoch a sealed target names, without opening it; nil when too short to name one.
    public static func keyID(ofSealed sealed: [UInt8]) -> Epoch? {
        guard sealed.count >= FileID.byteCount + Envelope.overhead else { return nil }
        return try? sealed[FileID.byteCount...].withUnsafeBytes { try Envelope.keyID(of: $0) }
    }

    private func location(_ targetID: FileID) -> BlockLocation {
        BlockLocation(volumeID: keys.volumeID, fileID: targetID, blockIndex: 0)
    }
}
