import EpochFormat
import EpochIO
import Glibc

/// Entry points the CLI uses to create a volume and to open its header.
public enum Volume {
    /// Creates a volume in `backing`, which must be empty or not exist yet; a member of the raft
    /// cluster `clusterID` when one is given.
    public static func create(backing: String, keySource spec: String, epoch: UInt32, blockSize: UInt32,
                              clusterID: ClusterID? = nil, formatVersion: UInt16 = HeaderSlot.formatVersion,
                              rootMode: mode_t? = nil, io: any BackingIO = SystemIO()) throws -> VolumeHeader {
        let source = try KeySourceSpec.parse(spec)
        try prepareEmptyDirectory(backing, mode: rootMode, io: io)
        let header = try HeaderJournal(store: try FileHeaderStore(creatingIn: backing, io: io), source: source)
            .create(epoch: epoch, blockSize: blockSize, clusterID: clusterID, formatVersion: formatVersion)
        try io.withOpened(backing, in: .currentDirectory, flags: O_RDONLY | O_DIRECTORY) { try DirectoryIV.createDurably(in: $0, io: io) }
        return header
    }

    /// The journal of an existing volume, with the key source remembered in its header unless
    /// `keySourceOverride` names another. A remembered `command:` source is refused: only the
    /// operator's own (the override) is ever run.
    public static func journal(backing: String, keySourceOverride: String? = nil, io: any BackingIO = SystemIO()) throws -> HeaderJournal {
        let store = try FileHeaderStore(backing: backing, io: io)
        let spec = try keySourceOverride ?? rememberedKeySource(store)
        let source = try KeySourceSpec.parse(spec)
        if keySourceOverride == nil, source is CommandKeySource { throw KeySourceError.storedCommand(spec: spec) }
        return HeaderJournal(store: store, source: source)
    }

    /// The documented CLI exit code for an error: 64 for a malformed key source spec, 2 for key
    /// failures, 3 for a refused lower epoch, older header or retire, 1 for everything else.
    public static func exitCode(for error: any Error) -> Int32 {
        switch error {
        case KeySourceError.badSpec: 64
        case is KeySourceError, JournalError.wrongKey, JournalError.epochUnrecoverable: 2
        case JournalError.epochBelowCurrent, JournalError.retiringActiveEpoch, HeaderRestoreError.undoes, is RetireError: 3
        default: 1
        }
    }

    /// The key source spec of the newest slot with a valid checksum. Read before any key is
    /// available, so only the checksum vouches for it; the keyring's AAD binds it afterwards.
    private static func rememberedKeySource(_ store: FileHeaderStore) throws -> String {
        try HeaderJournal.newestValidSlot(in: store).slot.keySource
    }

    /// Makes `path` (the mount's root: its mode is the root's) as mkdir(1) would, 0777 less
    /// the umask, or with exactly `mode`; an existing empty directory keeps its own mode
    /// unless `mode` is given (docs/FORMAT.md §1.3).
    private static func prepareEmptyDirectory(_ path: String, mode: mode_t?, io: any BackingIO) throws {
        do {
            try io.mkdirat(path, in: .currentDirectory, mode: 0o777)
        } catch let error as SystemError where error.errno == EEXIST {
            guard try io.readdir(at: path).isEmpty else { throw SystemError("init", path: path, errno: ENOTEMPTY) }
        }
        // A chmod, which the umask does not narrow.
        if let mode {
            try io.withOpened(path, in: .currentDirectory, flags: O_RDONLY | O_DIRECTORY) { try io.fchmod($0, mode: mode & 0o7777) }
        }
    }
}
