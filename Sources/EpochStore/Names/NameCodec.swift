import EpochCrypto
import EpochFormat

/// Why a backing name did not decrypt.
public enum NameError: Error, Equatable, Sendable, CustomStringConvertible {
    case notEncrypted(String)
    case authenticationFailed(String)
    case invalidPlaintext(String)
    /// A long name's side file (docs/FORMAT.md §5.3) or a long symlink's link file (§5.4)
    /// holds what belongs to another entry: its hash is not the name it is read under.
    case sideFileOfAnotherEntry(String)

    public var description: String {
        switch self {
        case let .notEncrypted(name): "backing name '\(name)' is not an epochfs name"
        case let .authenticationFailed(name): "backing name '\(name)' failed authentication"
        case let .invalidPlaintext(name): "backing name '\(name)' decrypts to an invalid name"
        case let .sideFileOfAnotherEntry(name): "side file of '\(name)' holds another entry's name or target"
        }
    }
}

/// Names in the backing directory (docs/FORMAT.md §5): each plaintext name is sealed with
/// AES-256-SIV under the volume's name key, with the directory's 16-byte IV as associated
/// data, and written as unpadded base64url. Deterministic, so a lookup computes the backing
/// name directly; authenticated, so a tampered name is an error, never another name.
public struct NameCodec: Sendable {
    /// Longest backing name most file systems take.
    static let maxBackingName = 255
    static let longNamePrefix = "epochfs.long."
    public static let longNameSuffix = ".name"

    private let siv: AESSIVKey

    public init(nameKey: SecretBytes) throws {
        siv = try AESSIVKey(nameKey)
    }

    /// The backing name for `name` in a directory with IV `directoryIV`: the encrypted name, or
    /// for one longer than 255 bytes `epochfs.long.<base64url(SHA-256(encrypted name))>`, whose
    /// full encrypted name is kept in the side file `<that>.name`.
    public func encrypt(_ name: [UInt8], directoryIV: [UInt8]) throws -> BackingName {
        let encoded = Base64URL.encode(try siv.seal(name, aad: directoryIV))
        if encoded.utf8.count <= Self.maxBackingName { return BackingName(name: encoded, longName: nil) }
        return BackingName(name: Self.longEntryName(of: encoded), longName: encoded)
    }

    /// The entry name of the long encrypted name `encoded` (docs/FORMAT.md §5.3).
    static func longEntryName(of encoded: String) -> String {
        longNamePrefix + Base64URL.encode(SHA256.hash(Array(encoded.utf8)))
    }

    /// The encrypted name that long-name entry `entry` stands for, from the bytes of its side
    /// file: only one whose hash is `entry`, so side files swapped between entries are an error.
    public static func longName(ofEntry entry: String, sideFile bytes: [UInt8]) throws -> String {
        let encrypted = String(decoding: bytes, as: UTF8.self)
        guard longEntryName(of: encrypted) == entry else { throw NameError.sideFileOfAnotherEntry(entry) }
        return encrypted
    }

    /// The plaintext of an encrypted backing name (for long names, the side file's content).
    public func decrypt(_ encoded: String, directoryIV: [UInt8]) throws -> [UInt8] {
        guard let sealed = Base64URL.decode(encoded), sealed.count > AESSIVKey.tagSize else {
            throw NameError.notEncrypted(encoded)
        }
        let plain: [UInt8]
        do {
            plain = try siv.open(sealed, aad: directoryIV)
        } catch CryptoError.authenticationFailed {
            throw NameError.authenticationFailed(encoded)
        }
        guard !plain.isEmpty, !plain.contains(0), !plain.contains(UInt8(ascii: "/")), plain != [0x2e], plain != [0x2e, 0x2e] else {
            throw NameError.invalidPlaintext(encoded)
        }
        return plain
    }

    /// Backing names that are epochfs's own bookkeeping (header, directory IV, long-name side
    /// files) and never a user's entry. Encrypted names cannot start with "epochfs.": base64url
    /// has no ".".
    public static func isInternal(_ backingName: String) -> Bool {
        backingName.hasPrefix("epochfs.") && !isLongName(backingName)
    }

    public static func isLongName(_ backingName: String) -> Bool {
        backingName.hasPrefix(longNamePrefix) && !backingName.hasSuffix(longNameSuffix)
    }

    /// Whether `backingName` is a long name's side file (`epochfs.long.<hash>.name`).
    public static func isLongNameSideFile(_ backingName: String) -> Bool {
        backingName.hasPrefix(longNamePrefix) && backingName.hasSuffix(longNameSuffix)
    }
}

/// A name as stored in the backing directory.
public struct BackingName: Equatable, Sendable {
    /// The directory entry.
    public let name: String
    /// For a hashed long name, the full encrypted name kept in the side file `name + ".name"`.
    public let longName: String?

    public var sideFile: String? { longName == nil ? nil : name + NameCodec.longNameSuffix }
}
