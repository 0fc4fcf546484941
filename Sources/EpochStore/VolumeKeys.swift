import EpochCrypto
import EpochFormat
import EpochHeader
import Synchronization

/// The live keyring of a mounted volume. A rekey installs the new keyring; blocks sealed after
/// that carry the new epoch, and older epochs stay readable while the keyring holds them.
public final class VolumeKeys: Sendable {
    public let volumeID: VolumeID
    public let blockSize: Int
    public let names: NameCodec
    /// Authenticates every file record (docs/FORMAT.md §6.2); derived from the name key, so it
    /// never changes with the epoch.
    public let recordKey: AESGCMKey
    /// Authenticates every directory record (docs/FORMAT.md §5.6), also from the name key.
    public let directoryKey: AESGCMKey
    private let keyring: Mutex<Keyring>

    public init(header: VolumeHeader) throws {
        volumeID = header.volumeID
        blockSize = Int(header.slot.blockSize)
        names = try NameCodec(nameKey: header.keyring.nameKey)
        recordKey = try FileRecord.key(nameKey: header.keyring.nameKey, volumeID: volumeID)
        directoryKey = try DirectoryRecord.key(nameKey: header.keyring.nameKey, volumeID: volumeID)
        keyring = Mutex(header.keyring)
    }

    /// How many keyrings were installed: keys derived from an earlier one (cached per file)
    /// must be derived again, so that a retired epoch's keys are gone everywhere at once.
    public var generation: UInt64 { installed.load(ordering: .acquiring) }
    private let installed = Atomic<UInt64>(0)

    public func install(_ newKeyring: Keyring) {
        keyring.withLock { $0 = newKeyring }
        installed.add(1, ordering: .releasing)
    }

    public var activeEpoch: Epoch { keyring.withLock { $0.activeEpoch } }

    public func storageDEK(epoch: Epoch) throws(EnvelopeError) -> SecretBytes {
        let keys = try keyring.withLock { (ring) throws(EnvelopeError) in try ring.keys(for: epoch) }
        return keys.storageDEK!
    }

    /// The key of the storage envelopes of one file (or pseudo-file: a symlink target, an
    /// xattr value) under `epoch` (docs/FORMAT.md §2.2).
    public func fileKey(epoch: Epoch, fileID: FileID) throws -> AESGCMKey {
        try AESGCMKey(StorageEnvelope.fileKey(storageDEK: try storageDEK(epoch: epoch), volumeID: volumeID, fileID: fileID))
    }
}
