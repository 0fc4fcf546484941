import EpochFormat
import EpochHeader
import EpochIO
import EpochStore
import EpochSystem
import Glibc

/// Entry points the CLI uses to create a volume and to open its header.
public enum Volume {
    /// Creates a volume in `backing`, which must be empty or not exist yet; a member of the raft
    /// cluster `clusterID` when one is given. It owns `backing` while it writes (a mounted
    /// volume is refused with `VolumeBusy`), and a failure at any step leaves the directory as
    /// it was found: what it created is removed, so the next `init` can start over.
    public static func create(backing: String, keySource spec: String, epoch: Epoch, blockSize: UInt32,
                              clusterID: ClusterID? = nil, formatVersion: UInt16 = HeaderSlot.formatVersion,
                              rootMode: mode_t? = nil, io: any BackingIO = SystemIO()) throws -> VolumeHeader {
        let source = try KeySourceSpec.parse(spec)
        let madeDirectory = try makeDirectory(backing, io: io)
        let ownerFileExisted = !madeDirectory && (try? io.fstatat(backing + "/" + VolumeOwner.fileName, in: .currentDirectory)) != nil
        var created: [String] = ownerFileExisted ? [] : [VolumeOwner.fileName]
        do {
            let owner = try VolumeOwner(claiming: backing, for: .command(pid: getpid(), name: "init"), io: io)
            defer { withExtendedLifetime(owner) {} }
            guard try io.readdir(at: backing).allSatisfy({ $0.name == VolumeOwner.fileName }) else {
                throw SystemError("init", path: backing, errno: ENOTEMPTY)
            }
            let store = try FileHeaderStore(creatingIn: backing, io: io)
            created.append(FileHeaderStore.fileName)
            let header = try HeaderJournal(store: store, source: source)
                .create(epoch: epoch, blockSize: blockSize, clusterID: clusterID, formatVersion: formatVersion)
            created.append(DirectoryIV.fileName)
            try io.withOpened(backing, in: .currentDirectory, flags: O_RDONLY | O_DIRECTORY) { directory in
                let ivs = DirectoryIV(io: io, directoryKey: try VolumeKeys(header: header).directoryKey, formatVersion: formatVersion)
                try ivs.createDurably(in: directory)
                // The mount's root mode, exactly: a chmod, which the umask does not narrow.
                if let rootMode { try io.fchmod(directory, mode: rootMode & 0o7777) }
            }
            return header
        } catch let busy as VolumeBusy {
            throw busy // someone else's volume: nothing of it was ours to remove
        } catch {
            for name in created.reversed() { try? io.unlinkat(backing + "/" + name, in: .currentDirectory, removeDirectory: false) }
            if madeDirectory { try? io.unlinkat(backing, in: .currentDirectory, removeDirectory: true) }
            throw error
        }
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

    /// The key source spec of the newest slot with a valid checksum. Read before any key is
    /// available, so only the checksum vouches for it; the keyring's AAD binds it afterwards.
    private static func rememberedKeySource(_ store: FileHeaderStore) throws -> String {
        try HeaderJournal.newestValidSlot(in: store).slot.keySource
    }

    /// Makes `path` (the mount's root) a new directory as mkdir(1) would, 0777 less the umask;
    /// false when it exists already, and then it keeps its mode (docs/FORMAT.md §1.3).
    private static func makeDirectory(_ path: String, io: any BackingIO) throws -> Bool {
        do {
            try io.mkdirat(path, in: .currentDirectory, mode: 0o777)
            return true
        } catch let error as SystemError where error.errno == EEXIST {
            return false
        }
    }
}

extension LiveVolume {
    /// Opens the volume in `backing` with its remembered key source, or `keySourceOverride`.
    public convenience init(backing: String, keySourceOverride: String? = nil, io: any BackingIO = SystemIO(),
                            anchoring: AnchorOptions? = nil) throws {
        try self.init(backing: backing, journal: try Volume.journal(backing: backing, keySourceOverride: keySourceOverride, io: io), io: io,
                      anchoring: anchoring)
    }
}
