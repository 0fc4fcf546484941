import EpochCrypto
import EpochFormat
import EpochSystem

/// The raft keys that open WAL entries' raft envelopes: a volume's keyring, or raw key files.
/// Lookups fail with the envelope layer's errors for unknown and retired key ids.
public enum RaftKeys {
    /// The raft DEKs of a volume's keyring, by key id (= epoch).
    public static func lookup(in keyring: Keyring) -> EnvelopeKeyLookup {
        { keyID in
            guard let raftDEK = try keyring.keys(for: keyID).raftDEK else { throw EnvelopeError.retiredKey(keyID) }
            return try AESGCMKey(raftDEK)
        }
    }

    /// Raw raft keys by key id; any other id is unknown.
    public static func lookup(_ keys: [Epoch: AESGCMKey]) -> EnvelopeKeyLookup {
        { keyID in
            guard let key = keys[keyID] else { throw EnvelopeError.unknownKeyID(keyID) }
            return key
        }
    }

    /// A raw raft key file: 32 raw bytes, or 64 hex digits with optional surrounding whitespace.
    /// Throws `SystemError` when the file cannot be read, `KeyMaterialError` when it holds no key.
    public static func readKeyFile(_ path: String) throws -> AESGCMKey {
        try AESGCMKey(decodeKeyMaterial(readSecretFile(path)))
    }
}
