import EpochIO
import EpochCrypto
import EpochFormat
import EpochSystem

/// Why a key source did not yield a key. Messages name the epoch and the path or command,
/// never key material.
public enum KeySourceError: Error, Equatable, Sendable, CustomStringConvertible {
    case badSpec(spec: String, reason: String)
    case unavailable(epoch: Epoch, reason: String)
    case timedOut(epoch: Epoch, seconds: Double)
    case badKeyMaterial(epoch: Epoch, reason: String)
    case wrongDerivation(spec: String, reason: String)
    /// The header names a `command:` source and no operator did: the backing directory is
    /// what encryption at rest defends against, so a command found there is never run.
    case storedCommand(spec: String)

    public var description: String {
        switch self {
        case let .badSpec(spec, reason): "bad key source '\(spec)': \(reason)"
        case let .unavailable(epoch, reason): "key source has no key for epoch \(epoch): \(reason)"
        case let .timedOut(epoch, seconds): "key source timed out after \(seconds) s fetching epoch \(epoch)"
        case let .badKeyMaterial(epoch, reason): "key for epoch \(epoch) is unusable: \(reason)"
        case let .wrongDerivation(spec, reason): "key source '\(spec)' does not fit this volume: \(reason)"
        case let .storedCommand(spec):
            "the volume's header names the key source '\(printable(spec))', and epochfs never runs a command it finds in "
                + "the backing directory: give the key source yourself (--key-source SPEC, or keysource=SPEC in fstab)"
        }
    }
}

/// `text` with every control character shown as `?`: a spec read from the backing directory
/// could hold terminal escape sequences.
private func printable(_ text: String) -> String {
    String(text.unicodeScalars.map { $0.properties.generalCategory == .control ? "?" : Character($0) })
}

/// What a key source yields for an epoch, from one request (a passphrase on stdin is read
/// once): the wrapping key and, on a cluster member sealing a new epoch, its cluster secret.
public struct EpochSecrets: Sendable {
    public let wrappingKey: SecretBytes
    /// The secret every member with the same key source gets for this epoch, from which the
    /// epoch's raft DEK is derived (docs/FORMAT.md §3.7); nil when the volume has no cluster id.
    public let clusterSecret: SecretBytes?
}

/// Yields the 32-byte wrapping key of an epoch (docs/FORMAT.md §4).
public protocol KeySource: Sendable {
    /// The canonical spec, remembered in the volume header so later commands need only BACKING.
    var spec: String { get }
    /// How a new epoch's wrapping key will be derived (a fresh scrypt salt for passphrases).
    func keyDerivationForNewEpoch() throws -> KeyDerivation
    func wrappingKey(epoch: Epoch, derivation: KeyDerivation) throws -> SecretBytes
    /// The wrapping key of `epoch` and, when `clusterID` is set, its cluster secret.
    func epochSecrets(epoch: Epoch, derivation: KeyDerivation, clusterID: ClusterID?) throws -> EpochSecrets
    /// Epochs this source can name, newest first, for trial recovery; nil when it cannot list them.
    func candidateEpochs() throws -> [Epoch]?
}

/// Parses `file:TEMPLATE`, `command:CMD` and `passphrase:FILE` (docs/FORMAT.md §4; docs/OPERATIONS.md "Key sources").
public enum KeySourceSpec {
    public static func parse(_ spec: String, workingDirectory: String? = nil,
                             commandTimeout: Double = CommandKeySource.defaultTimeout) throws -> any KeySource {
        guard let colon = spec.firstIndex(of: ":") else {
            throw KeySourceError.badSpec(spec: spec, reason: "expected file:TEMPLATE, command:CMD or passphrase:FILE")
        }
        let kind = spec[..<colon]
        let value = String(spec[spec.index(after: colon)...])
        guard !value.isEmpty else { throw KeySourceError.badSpec(spec: spec, reason: "nothing after '\(kind):'") }
        switch kind {
        case "file":
            return try FileKeySource(template: absolute(value, from: workingDirectory))
        case "command":
            return CommandKeySource(command: value, timeout: commandTimeout)
        case "passphrase":
            return try PassphraseKeySource(path: value == "-" ? value : absolute(value, from: workingDirectory))
        default:
            throw KeySourceError.badSpec(spec: spec, reason: "unknown kind '\(kind)'")
        }
    }

    /// Paths are made absolute so the remembered spec works from any directory.
    static func absolute(_ path: String, from workingDirectory: String?) -> String {
        if path.hasPrefix("/") { return path }
        let base = workingDirectory ?? currentDirectory()
        return base.hasSuffix("/") ? base + path : base + "/" + path
    }
}

/// Why bytes are not a key. Names only their length, never key material.
public enum KeyMaterialError: Error, Equatable, Sendable, CustomStringConvertible {
    case wrongLength(Int)
    case notHex

    public var description: String {
        switch self {
        case let .wrongLength(count): "expected 32 raw bytes or 64 hex digits, got \(count) bytes"
        case .notHex: "not a hex digit in the key"
        }
    }
}

/// Decodes key material: exactly 32 raw bytes, or 64 hex digits with optional surrounding
/// whitespace (a trailing newline from `echo` or an editor). Throws `KeyMaterialError`.
func decodeKeyMaterial(_ raw: SecretBytes) throws -> SecretBytes {
    if raw.count == Keyring.dekSize { return raw }
    return try raw.withUnsafeBytes { bytes in
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 || $0 == 0x0a || $0 == 0x0d }
        guard let first = bytes.firstIndex(where: { !isSpace($0) }),
              let last = bytes.lastIndex(where: { !isSpace($0) }), last - first + 1 == 2 * Keyring.dekSize else {
            throw KeyMaterialError.wrongLength(raw.count)
        }
        return try SecretBytes(count: Keyring.dekSize) { out in
            for index in 0..<Keyring.dekSize {
                guard let high = hexDigitValue(bytes[first + 2 * index]), let low = hexDigitValue(bytes[first + 2 * index + 1]) else {
                    throw KeyMaterialError.notHex
                }
                out[index] = high << 4 | low
            }
        }
    }
}

/// The wrapping key of `epoch` in `raw`, its errors naming the epoch.
func decodeWrappingKey(_ raw: SecretBytes, epoch: Epoch) throws -> SecretBytes {
    do {
        return try decodeKeyMaterial(raw)
    } catch let error as KeyMaterialError {
        throw KeySourceError.badKeyMaterial(epoch: epoch, reason: error.description)
    }
}

extension KeySource {
    /// Key files and commands: the key the source yields is the wrapping key and the cluster
    /// secret both, the same on every member that reads the same file or runs the same command.
    public func epochSecrets(epoch: Epoch, derivation: KeyDerivation, clusterID: ClusterID?) throws -> EpochSecrets {
        let key = try wrappingKey(epoch: epoch, derivation: derivation)
        return EpochSecrets(wrappingKey: key, clusterSecret: clusterID == nil ? nil : key)
    }

    /// Key files and commands hand out the wrapping key itself.
    func requireDirect(_ derivation: KeyDerivation) throws {
        guard derivation == .direct else {
            throw KeySourceError.wrongDerivation(spec: spec, reason: "the volume was set up with a passphrase")
        }
    }
}
