import EpochIO
import EpochCrypto
import EpochFormat
import EpochSystem
import Glibc

/// `passphrase:FILE`: the wrapping key is scrypt(passphrase, salt) with the salt and cost in
/// the header; every rekey draws a fresh salt. FILE may contain `%d` (one passphrase file per
/// epoch); `-` reads one line from stdin per key request, so an offline rekey reads the
/// current passphrase and then the new one.
public struct PassphraseKeySource: KeySource {
    public let path: String
    public let parameters: ScryptParameters

    public init(path: String, parameters: ScryptParameters = .standard) throws {
        self.path = path
        self.parameters = parameters
    }

    public var spec: String { "passphrase:\(path)" }

    public func keyDerivationForNewEpoch() throws -> KeyDerivation { try .freshScrypt(parameters) }

    public func wrappingKey(epoch: Epoch, derivation: KeyDerivation) throws -> SecretBytes {
        try epochSecrets(epoch: epoch, derivation: derivation, clusterID: nil).wrappingKey
    }

    /// The passphrase is read once; the wrapping key is scrypt with the slot's random salt, the
    /// cluster secret scrypt with the cluster's fixed salt, so that members agree on it.
    public func epochSecrets(epoch: Epoch, derivation: KeyDerivation, clusterID: ClusterID?) throws -> EpochSecrets {
        guard case let .scrypt(parameters, salt) = derivation else {
            throw KeySourceError.wrongDerivation(spec: spec, reason: "the volume was set up with a key file or command")
        }
        let passphrase = try readPassphrase(epoch: epoch)
        guard passphrase.count > 0 else { throw KeySourceError.badKeyMaterial(epoch: epoch, reason: "empty passphrase") }
        return EpochSecrets(
            wrappingKey: try parameters.derive(passphrase: passphrase, salt: salt, count: Keyring.dekSize),
            clusterSecret: try clusterID.map { try parameters.derive(passphrase: passphrase, salt: $0.passphraseSalt, count: Keyring.dekSize) })
    }

    public func candidateEpochs() throws -> [Epoch]? {
        path.contains("%d") ? try FileKeySource(template: path).candidateEpochs() : nil
    }

    /// The passphrase without its line ending.
    private func readPassphrase(epoch: Epoch) throws -> SecretBytes {
        let raw: SecretBytes
        do {
            if path == "-" {
                raw = try readLine(fd: 0)
            } else {
                raw = try readSecretFile(path.replacing("%d", with: epoch.description))
            }
        } catch let error as SystemError {
            throw KeySourceError.unavailable(epoch: epoch, reason: error.description)
        }
        return raw.withUnsafeBytes { bytes in
            let end = bytes.firstIndex(where: { $0 == 0x0a || $0 == 0x0d }) ?? bytes.count
            return SecretBytes(copying: UnsafeRawBufferPointer(rebasing: bytes[..<end]))
        }
    }

    /// One line from a file descriptor, read byte by byte so nothing after it is consumed.
    private func readLine(fd: Int32) throws -> SecretBytes {
        var length = 0
        let line = try SecretBytes(count: 1024) { buffer in
            while length < buffer.count {
                let n = retryingEINTR { read(fd, buffer.baseAddress! + length, 1) }
                guard n >= 0 else { throw SystemError("read", path: "stdin") }
                if n == 0 || buffer[length] == 0x0a { break }
                length += 1
            }
        }
        return line.withUnsafeBytes { SecretBytes(copying: UnsafeRawBufferPointer(rebasing: $0[..<length])) }
    }
}
