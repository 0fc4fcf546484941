import EpochCrypto

/// How the wrapping key of the slot's epoch is obtained from what the key source yields.
public enum KeyDerivation: Equatable, Sendable {
    /// The key source yields the 32-byte wrapping key itself (key file, command).
    case direct
    /// The key source yields a passphrase; the wrapping key is scrypt(passphrase, salt).
    case scrypt(ScryptParameters, salt: [UInt8])

    public static let saltSize = 32

    public static func freshScrypt(_ parameters: ScryptParameters = .standard) throws -> KeyDerivation {
        .scrypt(parameters, salt: try SecureRandom.bytes(saltSize))
    }
}

/// Why a header slot could not be used.
public enum HeaderSlotError: Error, Equatable, Sendable, CustomStringConvertible {
    /// All zeros: the slot was never written.
    case empty
    case badMagic
    case unsupportedVersion(UInt16)
    /// The SHA-256 over the slot does not match: a torn or damaged write.
    case checksumMismatch
    case malformed(FormatError)
    /// Checksum fine but the keyring does not open: wrong key for the epoch, or tampering.
    case wrongKey(epoch: Epoch)

    public var description: String {
        switch self {
        case .empty: "slot is empty"
        case .badMagic: "slot has no epochfs magic"
        case let .unsupportedVersion(v): "slot has unsupported format version \(v)"
        case .checksumMismatch: "slot checksum does not match (torn or damaged write)"
        case let .malformed(error): "slot is malformed: \(error)"
        case let .wrongKey(epoch): "the key for epoch \(epoch) does not open the keyring (wrong key or tampered header)"
        }
    }
}

/// One of the two fixed-size header slots (A at offset 0, B at offset `size`). All integers
/// big-endian; the byte map is in docs/FORMAT.md §3.1.
public struct HeaderSlot: Equatable, Sendable {
    public static let size = 65_536
    public static let magic = Array("EPOCHFS\u{1}".utf8)
    /// Format 5 binds each file's and directory's extended attributes in its record
    /// (docs/FORMAT.md §5.5). Format 4 gives every directory an authenticated record of what
    /// its last commit made durable (§5.6); format 3 gives every file one (§6.2); format 2 stores file
    /// content with shadow slots but no record, format 1 without either. Volumes of formats 3
    /// and 4 are still mounted as they are; formats 1 and 2 are read (export, info,
    /// fsck) but not mounted.
    public static let formatVersion: UInt16 = 5
    /// The first format that binds extended attributes.
    public static let attributeBindingVersion: UInt16 = 5
    public static let oldestMountedFormatVersion: UInt16 = 3
    public static let supportedFormatVersions: ClosedRange<UInt16> = 1...formatVersion
    public static let maxKeySourceLength = 1024
    /// Bytes 0..<1124 are the clear fields, all of them the AAD of the sealed keyring.
    public static let clearSize = 1124
    public static let checksumOffset = size - SHA256.byteCount
    public static let maxSealedKeyring = checksumOffset - clearSize
    /// Epoch value meaning "not recorded": the open path then recovers it by trial decryption.
    public static let unrecordedEpoch: Epoch = 0

    /// The format version the volume was created with; a commit keeps it.
    public var formatVersion: UInt16
    public var volumeID: VolumeID
    public var sequence: UInt64
    public var epoch: Epoch
    public var blockSize: UInt32
    public var raftCutover: UInt64
    public var keyDerivation: KeyDerivation
    /// The key source spec remembered in the volume (never key material).
    public var keySource: String
    /// `nonce(12) ‖ AES-256-GCM(wrapping key, keyring) ‖ tag(16)`.
    public var sealedKeyring: [UInt8]

    public init(volumeID: VolumeID, sequence: UInt64, epoch: Epoch, blockSize: UInt32, raftCutover: UInt64,
                keyDerivation: KeyDerivation, keySource: String, sealedKeyring: [UInt8] = [], formatVersion: UInt16 = Self.formatVersion) {
        self.formatVersion = formatVersion
        self.volumeID = volumeID
        self.sequence = sequence
        self.epoch = epoch
        self.blockSize = blockSize
        self.raftCutover = raftCutover
        self.keyDerivation = keyDerivation
        self.keySource = keySource
        self.sealedKeyring = sealedKeyring
    }

    /// The clear fields, which are also the AAD of the sealed keyring.
    public func clearFields(sealedLength: Int) -> [UInt8] {
        var w = ByteWriter(capacity: Self.clearSize)
        w.append(contentsOf: Self.magic)
        w.append(formatVersion)
        w.append(UInt16(0))
        w.append(contentsOf: volumeID.bytes)
        w.append(sequence)
        w.append(epoch)
        w.append(blockSize)
        w.append(raftCutover)
        switch keyDerivation {
        case .direct:
            w.append(UInt8(0))
            w.appendZeros(1 + 4 + 4 + KeyDerivation.saltSize)
        case let .scrypt(parameters, salt):
            w.append(UInt8(1))
            w.append(parameters.log2N)
            w.append(parameters.r)
            w.append(parameters.p)
            w.append(contentsOf: salt)
        }
        let spec = Array(keySource.utf8)
        w.append(UInt16(spec.count))
        w.append(contentsOf: spec)
        w.appendZeros(Self.maxKeySourceLength - spec.count)
        w.append(UInt32(sealedLength))
        assert(w.bytes.count == Self.clearSize)
        return w.bytes
    }

    /// The full slot, `size` bytes, checksum last.
    public func encoded() throws(FormatError) -> [UInt8] {
        guard keySource.utf8.count <= Self.maxKeySourceLength else {
            throw FormatError.invalid(what: "key source spec", reason: "longer than \(Self.maxKeySourceLength) bytes")
        }
        guard sealedKeyring.count <= Self.maxSealedKeyring else {
            throw FormatError.invalid(what: "keyring", reason: "too many epochs for one header slot; retire old epochs")
        }
        if case let .scrypt(_, salt) = keyDerivation, salt.count != KeyDerivation.saltSize {
            throw FormatError.invalid(what: "scrypt salt", reason: "must be \(KeyDerivation.saltSize) bytes")
        }
        var bytes = clearFields(sealedLength: sealedKeyring.count) + sealedKeyring
        bytes.append(contentsOf: repeatElement(0, count: Self.checksumOffset - bytes.count))
        bytes += SHA256.hash(bytes)
        return bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(HeaderSlotError) -> HeaderSlot {
        guard bytes.count == size else {
            throw .malformed(.truncated(what: "header slot", needed: size, available: bytes.count))
        }
        if bytes.allSatisfy({ $0 == 0 }) { throw .empty }
        guard Array(bytes[0..<magic.count]) == magic else { throw .badMagic }
        guard SHA256.hash(Array(bytes[..<checksumOffset])) == Array(bytes[checksumOffset...]) else {
            throw .checksumMismatch
        }
        do {
            return try parse(bytes)
        } catch let error as HeaderSlotError {
            throw error
        } catch let error as FormatError {
            throw .malformed(error)
        } catch {
            throw .malformed(.invalid(what: "header slot", reason: "\(error)"))
        }
    }

    private static func parse(_ bytes: [UInt8]) throws -> HeaderSlot {
        var r = ByteReader(bytes[...], what: "header slot")
        _ = try r.read(magic.count)
        let version = try r.readUInt16()
        guard supportedFormatVersions.contains(version) else { throw HeaderSlotError.unsupportedVersion(version) }
        guard try r.readUInt16() == 0 else { throw FormatError.invalid(what: "header slot", reason: "reserved bytes set") }
        let volumeID = try VolumeID(try r.read(VolumeID.byteCount))
        let sequence = try r.readUInt64()
        let epoch = try r.readEpoch()
        let blockSize = try r.readUInt32()
        let raftCutover = try r.readUInt64()
        let kdfKind = try r.readUInt8()
        let parameters = ScryptParameters(log2N: try r.readUInt8(), r: try r.readUInt32(), p: try r.readUInt32())
        let salt = Array(try r.read(KeyDerivation.saltSize))
        let keyDerivation: KeyDerivation
        switch kdfKind {
        case 0: keyDerivation = .direct
        case 1: keyDerivation = .scrypt(parameters, salt: salt)
        default: throw FormatError.invalid(what: "header slot", reason: "unknown key derivation \(kdfKind)")
        }
        let specLength = Int(try r.readUInt16())
        guard specLength <= maxKeySourceLength else {
            throw FormatError.invalid(what: "header slot", reason: "key source spec length \(specLength)")
        }
        let specField = try r.read(maxKeySourceLength)
        guard let keySource = String(validating: specField.prefix(specLength), as: UTF8.self) else {
            throw FormatError.invalid(what: "header slot", reason: "key source spec is not UTF-8")
        }
        let sealedLength = Int(try r.readUInt32())
        guard sealedLength >= AESGCMKey.nonceSize + AESGCMKey.tagSize, sealedLength <= maxSealedKeyring else {
            throw FormatError.invalid(what: "header slot", reason: "sealed keyring length \(sealedLength)")
        }
        return HeaderSlot(volumeID: volumeID, sequence: sequence, epoch: epoch, blockSize: blockSize,
                          raftCutover: raftCutover, keyDerivation: keyDerivation, keySource: keySource,
                          sealedKeyring: Array(try r.read(sealedLength)), formatVersion: version)
    }

    // MARK: Sealing the keyring

    /// Seals `keyring` under `wrappingKey`, binding every clear field (volume id, sequence,
    /// epoch, ...) as AAD, with a fresh random nonce.
    public mutating func seal(_ keyring: Keyring, wrappingKey: SecretBytes) throws {
        let plaintext = keyring.encoded()
        let sealedLength = AESGCMKey.nonceSize + plaintext.count + AESGCMKey.tagSize
        let aad = clearFields(sealedLength: sealedLength)
        let nonce = try SecureRandom.bytes(AESGCMKey.nonceSize)
        var sealed = nonce + [UInt8](repeating: 0, count: plaintext.count + AESGCMKey.tagSize)
        let key = try AESGCMKey(wrappingKey)
        try nonce.withUnsafeBytes { n in
            try aad.withUnsafeBytes { a in
                try plaintext.withUnsafeBytes { p in
                    try sealed.withUnsafeMutableBytes { s in
                        try key.seal(nonce: n, aad: a, plaintext: p,
                                     into: UnsafeMutableRawBufferPointer(rebasing: s[AESGCMKey.nonceSize...]))
                    }
                }
            }
        }
        sealedKeyring = sealed
    }

    /// Opens the keyring with `wrappingKey`. Pure: no side effects, so it doubles as the trial
    /// in epoch recovery.
    public func openKeyring(wrappingKey: SecretBytes) throws -> Keyring {
        let aad = clearFields(sealedLength: sealedKeyring.count)
        let key = try AESGCMKey(wrappingKey)
        let body = sealedKeyring.count - AESGCMKey.nonceSize - AESGCMKey.tagSize
        let plaintext: SecretBytes
        do {
            plaintext = try SecretBytes(count: body) { out in
                try sealedKeyring.withUnsafeBytes { s in
                    try aad.withUnsafeBytes { a in
                        try key.open(nonce: UnsafeRawBufferPointer(rebasing: s[..<AESGCMKey.nonceSize]), aad: a,
                                     sealed: UnsafeRawBufferPointer(rebasing: s[AESGCMKey.nonceSize...]), into: out)
                    }
                }
            }
        } catch CryptoError.authenticationFailed {
            throw HeaderSlotError.wrongKey(epoch: epoch)
        }
        return try Keyring.decode(plaintext)
    }
}
