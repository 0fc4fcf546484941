import EpochIO
import EpochCrypto
import EpochFormat
import EpochSystem

/// `command:CMD`: runs CMD through `/bin/sh` with the epoch as its last argument; the key
/// (32 raw bytes or 64 hex digits) is what it prints on stdout. The way a trust-quorum key
/// manager hands out epoch-derived keys. A non-zero exit or a timeout is an error.
public struct CommandKeySource: KeySource {
    public static let defaultTimeout = 30.0

    public let command: String
    public let timeout: Double

    public init(command: String, timeout: Double = defaultTimeout) {
        self.command = command
        self.timeout = timeout
    }

    public var spec: String { "command:\(command)" }

    public func keyDerivationForNewEpoch() throws -> KeyDerivation { .direct }

    public func wrappingKey(epoch: Epoch, derivation: KeyDerivation) throws -> SecretBytes {
        try requireDirect(derivation)
        let outcome: Subprocess.Outcome
        do {
            outcome = try Subprocess.runShell(command + " \"$@\"", arguments: [epoch.description], timeout: timeout, limit: 4096)
        } catch let error as SystemError {
            throw KeySourceError.unavailable(epoch: epoch, reason: "command '\(command)': \(error)")
        }
        switch outcome {
        case .timedOut:
            throw KeySourceError.timedOut(epoch: epoch, seconds: timeout)
        case let .exited(status, stdout):
            guard status == 0 else {
                throw KeySourceError.unavailable(epoch: epoch, reason: "command '\(command)' exited with status \(status)")
            }
            return try decodeWrappingKey(stdout, epoch: epoch)
        }
    }

    public func candidateEpochs() throws -> [Epoch]? { nil }
}
