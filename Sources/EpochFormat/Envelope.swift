import EpochCrypto

/// Why an envelope did not open. Structural checks happen before any AEAD work.
public enum EnvelopeError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Fewer than the 34 bytes every envelope has.
    case shortInput(length: Int)
    /// A version byte other than 0x01.
    case badVersion(UInt8)
    /// A flag byte other than 0x00.
    case badFlag(UInt8)
    /// key_id 0, which is reserved and never names a key.
    case reservedKeyID
    /// The keyring holds no key for this key_id (epoch).
    case unknownKeyID(Epoch)
    /// The key_id names an epoch whose keys were retired (dropped).
    case retiredKey(Epoch)
    /// The tag did not verify: tampered bytes, wrong location, wrong key or wrong purpose.
    case authenticationFailed(keyID: Epoch)

    public var description: String {
        switch self {
        case let .shortInput(length): "envelope too short (\(length) bytes, at least \(Envelope.overhead) needed)"
        case let .badVersion(version): "unsupported envelope version 0x\(String(version, radix: 16))"
        case let .badFlag(flag): "unsupported envelope flag 0x\(String(flag, radix: 16))"
        case .reservedKeyID: "envelope names the reserved key id 0"
        case let .unknownKeyID(id): "no key for key id \(id)"
        case let .retiredKey(id): "key id \(id) is retired"
        case let .authenticationFailed(id): "envelope under key id \(id) failed authentication"
        }
    }
}

/// Looks up the AEAD key for an envelope's key_id, or says why there is none.
public typealias EnvelopeKeyLookup = (Epoch) throws -> AESGCMKey

/// The one envelope layout both epochfs envelopes share (docs/FORMAT.md §2.1):
/// `version(1) ‖ flag(1) ‖ key_id(BE32) ‖ nonce(12) ‖ ciphertext ‖ tag(16)`.
public enum Envelope {
    public static let version: UInt8 = 0x01
    public static let flag: UInt8 = 0x00
    public static let headerSize = 18
    public static let overhead = headerSize + AESGCMKey.tagSize

    /// Checks length, version, flag and key id, and returns the key id.
    public static func keyID(of envelope: UnsafeRawBufferPointer) throws(EnvelopeError) -> Epoch {
        guard envelope.count >= overhead else { throw .shortInput(length: envelope.count) }
        guard envelope[0] == version else { throw .badVersion(envelope[0]) }
        guard envelope[1] == flag else { throw .badFlag(envelope[1]) }
        let keyID = Epoch(rawValue: UInt32(envelope[2]) << 24 | UInt32(envelope[3]) << 16 | UInt32(envelope[4]) << 8 | UInt32(envelope[5]))
        guard keyID != 0 else { throw .reservedKeyID }
        return keyID
    }

    /// Writes the envelope of `plaintext` into `output` (exactly `plaintext.count + 34` bytes).
    /// `nonce` nil draws 12 fresh random bytes; a fixed nonce is for known-answer tests only.
    public static func seal(plaintext: UnsafeRawBufferPointer, keyID: Epoch, key: AESGCMKey,
                            aad: UnsafeRawBufferPointer, nonce: [UInt8]? = nil,
                            into output: UnsafeMutableRawBufferPointer) throws {
        precondition(keyID != 0, "key id 0 is reserved")
        precondition(output.count == plaintext.count + overhead, "envelope buffer has the wrong size")
        output[0] = version
        output[1] = flag
        output.storeBytes(of: keyID.rawValue.bigEndian, toByteOffset: 2, as: UInt32.self)
        let nonceBuffer = UnsafeMutableRawBufferPointer(rebasing: output[6..<headerSize])
        if let nonce {
            precondition(nonce.count == AESGCMKey.nonceSize, "nonce must be 12 bytes")
            nonceBuffer.copyBytes(from: nonce)
        } else {
            try NonceSource.fill(nonceBuffer)
        }
        try key.seal(nonce: UnsafeRawBufferPointer(nonceBuffer), aad: aad, plaintext: plaintext,
                     into: UnsafeMutableRawBufferPointer(rebasing: output[headerSize...]))
    }

    /// Opens `envelope` with the key `lookup` returns for its key id, writing the plaintext
    /// (`envelope.count - 34` bytes) into `output`. `aad` is built from the key id.
    public static func open(_ envelope: UnsafeRawBufferPointer, lookup: EnvelopeKeyLookup,
                            aad: (Epoch) -> [UInt8], into output: UnsafeMutableRawBufferPointer) throws {
        let keyID = try keyID(of: envelope)
        let key = try lookup(keyID)
        try aad(keyID).withUnsafeBytes { try open(envelope, keyID: keyID, key: key, aad: $0, into: output) }
    }

    /// Opens `envelope`, whose key id `keyID(of:)` has returned, with `key` and `aad`: for a
    /// caller that keeps its keys and AADs at hand rather than looking them up per envelope.
    public static func open(_ envelope: UnsafeRawBufferPointer, keyID: Epoch, key: AESGCMKey,
                            aad: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        precondition(output.count == envelope.count - overhead, "plaintext buffer has the wrong size")
        do {
            try key.open(nonce: UnsafeRawBufferPointer(rebasing: envelope[6..<headerSize]), aad: aad,
                         sealed: UnsafeRawBufferPointer(rebasing: envelope[headerSize...]), into: output)
        } catch CryptoError.authenticationFailed {
            throw EnvelopeError.authenticationFailed(keyID: keyID)
        }
    }

    // MARK: Array conveniences

    public static func seal(_ plaintext: [UInt8], keyID: Epoch, key: AESGCMKey, aad: [UInt8],
                            nonce: [UInt8]? = nil) throws -> [UInt8] {
        var output = [UInt8](repeating: 0, count: plaintext.count + overhead)
        try plaintext.withUnsafeBytes { p in
            try aad.withUnsafeBytes { a in
                try output.withUnsafeMutableBytes { o in
                    try seal(plaintext: p, keyID: keyID, key: key, aad: a, nonce: nonce, into: o)
                }
            }
        }
        return output
    }

    public static func open(_ envelope: [UInt8], lookup: EnvelopeKeyLookup, aad: (Epoch) -> [UInt8]) throws -> [UInt8] {
        guard envelope.count >= overhead else { throw EnvelopeError.shortInput(length: envelope.count) }
        var output = [UInt8](repeating: 0, count: envelope.count - overhead)
        try envelope.withUnsafeBytes { e in
            try output.withUnsafeMutableBytes { o in try open(e, lookup: lookup, aad: aad, into: o) }
        }
        return output
    }
}

/// Purpose bytes: the first byte of every envelope AAD, so that one kind of envelope never
/// opens as the other.
public enum EnvelopePurpose: UInt8, Sendable {
    case storage = 0x53 // "S"
    case raft = 0x52 // "R"
}

/// Where a storage block lives; all of it is bound into the block's AAD.
public struct BlockLocation: Hashable, Sendable {
    public var volumeID: VolumeID
    public var fileID: FileID
    public var blockIndex: UInt64

    public init(volumeID: VolumeID, fileID: FileID, blockIndex: UInt64) {
        self.volumeID = volumeID
        self.fileID = fileID
        self.blockIndex = blockIndex
    }
}

/// Storage envelopes: one per file block, sealed with the file's HKDF-derived key (docs/FORMAT.md §2.2).
public enum StorageEnvelope {
    public static let aadSize = 47
    static let fileKeyLabel = Array("epochfs/v1/file".utf8)

    /// `'S' ‖ version ‖ flag ‖ key_id(BE32) ‖ volume_id(16) ‖ file_id(16) ‖ block_index(BE64)`.
    public static func aad(keyID: Epoch, location: BlockLocation) -> [UInt8] {
        var writer = ByteWriter(capacity: aadSize)
        writer.append(EnvelopePurpose.storage.rawValue)
        writer.append(Envelope.version)
        writer.append(Envelope.flag)
        writer.append(keyID)
        writer.append(contentsOf: location.volumeID.bytes)
        writer.append(contentsOf: location.fileID.bytes)
        writer.append(location.blockIndex)
        return writer.bytes
    }

    /// `HKDF-SHA256(IKM = storage DEK, salt = volume_id, info = "epochfs/v1/file" ‖ file_id, L = 32)`.
    public static func fileKey(storageDEK: SecretBytes, volumeID: VolumeID, fileID: FileID) throws -> SecretBytes {
        try HKDF.sha256(key: storageDEK, salt: volumeID.bytes, info: fileKeyLabel + fileID.bytes, count: AESGCMKey.keySize)
    }

    public static func seal(_ plaintext: [UInt8], keyID: Epoch, fileKey: AESGCMKey, location: BlockLocation,
                            nonce: [UInt8]? = nil) throws -> [UInt8] {
        try Envelope.seal(plaintext, keyID: keyID, key: fileKey, aad: aad(keyID: keyID, location: location), nonce: nonce)
    }

    /// `fileKeys` returns the file key for a key id (derived from that epoch's storage DEK).
    public static func open(_ envelope: [UInt8], location: BlockLocation, fileKeys: EnvelopeKeyLookup) throws -> [UInt8] {
        try Envelope.open(envelope, lookup: fileKeys, aad: { aad(keyID: $0, location: location) })
    }
}

/// The storage AADs of one file's blocks under one key id, built once: from block to block
/// only the block index, the last eight bytes, changes.
public struct StorageAAD: Sendable {
    public let keyID: Epoch
    private var bytes: [UInt8]

    public init(keyID: Epoch, volumeID: VolumeID, fileID: FileID) {
        self.keyID = keyID
        bytes = StorageEnvelope.aad(keyID: keyID, location: BlockLocation(volumeID: volumeID, fileID: fileID, blockIndex: 0))
    }

    /// Calls `body` with the AAD of block `index`.
    public mutating func withBlock<R>(_ index: UInt64, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        bytes.withUnsafeMutableBytes { $0.storeBytes(of: index.bigEndian, toByteOffset: StorageEnvelope.aadSize - 8, as: UInt64.self) }
        return try bytes.withUnsafeBytes(body)
    }
}

/// Raft envelopes: a payload sealed with the raft DEK of an epoch directly (docs/FORMAT.md §2.3).
public enum RaftEnvelope {
    public static let aadSize = 6

    /// `'R' ‖ version ‖ key_id(BE32)`.
    public static func aad(keyID: Epoch) -> [UInt8] {
        var writer = ByteWriter(capacity: aadSize)
        writer.append(EnvelopePurpose.raft.rawValue)
        writer.append(Envelope.version)
        writer.append(keyID)
        return writer.bytes
    }

    public static func seal(_ plaintext: [UInt8], keyID: Epoch, raftDEK: AESGCMKey, nonce: [UInt8]? = nil) throws -> [UInt8] {
        try Envelope.seal(plaintext, keyID: keyID, key: raftDEK, aad: aad(keyID: keyID), nonce: nonce)
    }

    public static func open(_ envelope: [UInt8], raftDEKs: EnvelopeKeyLookup) throws -> [UInt8] {
        try Envelope.open(envelope, lookup: raftDEKs, aad: aad(keyID:))
    }
}
