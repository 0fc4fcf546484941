import CLinux
import EpochCrypto
import EpochFormat
import EpochIO
import EpochSystem
import Glibc
import Synchronization

/// The plaintext tree of a volume over its backing directory (docs/FORMAT.md §1, §5): entries
/// by plaintext name, with encrypted and long names and their side files, directory IVs,
/// symlink targets and their link files, xattrs, and file content. The mount's FUSE
/// frontend is an adapter over this; offline commands use it as it is.
public final class BackingTree: Sendable {
    public let volume: LiveVolume
    public let root: BackingNode

    /// Who a new entry belongs to when the daemon creates it for someone else.
    public struct Owner: Sendable {
        public let user: uid_t
        public let group: gid_t

        public init(user: uid_t, group: gid_t) {
            self.user = user
            self.group = group
        }
    }

    /// An entry of a directory listing.
    public struct ListedEntry: Sendable {
        public let name: [UInt8]
        public let inode: UInt64
        /// `d_type` (DT_REG, DT_DIR, ...).
        public let type: UInt8
        /// The entry in the backing directory, for `locate(backingName:in:)`.
        public let backingName: String
    }

    /// Longest `user.` xattr value taken.
    public static let maxXattrValue = 65_536
    /// XATTR_NAME_MAX: the longest backing attribute name, so the longest plaintext name is
    /// 165 bytes (docs/FORMAT.md §5.5); longer ones cannot be stored, nor exist.
    static let maxBackingXattrName = 255

    /// A side file (directory IV, long-name or link file, `epochfs.links`) written since the
    /// last fsync of anything, held open with the directory it is in, both to be fsync'd.
    struct UnsyncedSideFile {
        let file: FileDescriptor
        let directory: FileDescriptor
    }

    /// Side files not yet durable. Every fsync, fdatasync and fsyncdir makes them durable
    /// before its own call, so nothing a caller made durable names a side file that is not:
    /// a directory made durable has its IV, a long name its side file, a long symlink its link
    /// file (docs/FORMAT.md §1.4). Without an fsync nothing is promised, as on any file system.
    let unsynced = Mutex<[UnsyncedSideFile]>([])
    /// Beyond this many (say, an untar of thousands of directories with no fsync), one syncfs
    /// makes them all durable at once instead of holding more descriptors.
    static let unsyncedLimit = 256
    /// Up to this many are fsync'd one by one; more take one syncfs, which is cheaper.
    static let unsyncedOneByOne = 4

    /// Held shared by everything that adds, removes, renames or looks up entries, and
    /// exclusively by a reseal that replaces an entry by a rename after reading it (a symlink,
    /// or a regular file copied): nothing may take, remove or reach that name in between.
    let namespace = ReadWriteLock()
    /// Held by whatever changes an xattr, so that a reseal never writes back a value that was
    /// replaced or removed after it read it.
    let xattrChanges = Mutex(())
    /// The name a symlink or copy-on-write reseal creates the new symlink or file under before
    /// renaming it over the old one (docs/FORMAT.md §1); left behind only by a crash in
    /// between, and then replaced.
    static let resealName = "epochfs.reseal"
    /// The backing file system's largest file, for `maxFileSize` (RequestLimits.swift).
    let backingSizeLimit = BackingSizeLimit()
    /// Every change made here, noted for the census a re-encryption of the mount keeps
    /// (EpochCheck's `LiveCensus`).
    package let changes = TreeChanges()
    /// A `noatime` mount's: backing files and directories are read with O_NOATIME. The kernel
    /// leaves a FUSE file's atime to the daemon, so the backing reads would set it otherwise.
    let keepsAccessTimes: Bool

    var io: any BackingIO { volume.io }
    package var ivs: DirectoryIV { volume.directoryIVs }

    /// The tree of `volume`. A root without an IV gets one while it holds no entry, unless
    /// `writing` is false (fsck without --repair writes nothing; it reports the IV instead).
    /// `keepingAccessTimes`: for a `noatime` mount.
    public init(volume: LiveVolume, writing: Bool = true, keepingAccessTimes: Bool = false) throws {
        self.volume = volume
        keepsAccessTimes = keepingAccessTimes
        let io = volume.io
        let fd = try io.open(volume.backing, in: .currentDirectory, flags: epochfs_O_PATH | O_DIRECTORY | O_CLOEXEC, mode: 0)
        root = try Self.node(openedAt: fd, volume: volume).node
        if writing { try ensureRootDirectoryIV() }
    }

    // MARK: Lookup and attributes

    /// The entry `name` in `directory` and its plaintext attributes, checked against the
    /// directory's record (format 4).
    public func lookup(_ name: [UInt8], in directory: BackingNode) throws -> (BackingNode, stat) {
        try locateChecked(backingName: try backingName(name, in: directory).name, in: directory)
    }

    /// The entry stored as `backingName` (from a listing) in `directory`, and its attributes.
    public func locate(backingName: String, in directory: BackingNode) throws -> (BackingNode, stat) {
        // Shared: a copy-on-write reseal replaces a file no node holds, and none may appear meanwhile.
        try namespace.withReadLock { try locateLocked(backingName: backingName, in: directory) }
    }

    func locateLocked(backingName: String, in directory: BackingNode) throws -> (BackingNode, stat) {
        let (node, info) = try backingNode(backingName, in: directory.fd)
        return (node, try plaintextAttributes(info, of: node))
    }

    /// The object stored as `backingPath` (a name, or a path relative to the directory open at
    /// `directory`) and its backing attributes: for a scan, which must reach objects whose
    /// plaintext attributes (a symlink's target length) do not decrypt.
    package func backingNode(_ backingPath: String, in directory: FileDescriptor) throws -> (node: BackingNode, info: stat) {
        let fd = try io.open(backingPath, in: directory, flags: epochfs_O_PATH | O_NOFOLLOW | O_CLOEXEC, mode: 0)
        return try Self.node(openedAt: fd, volume: volume)
    }

    /// The node of the object open (O_PATH) at `fd`, which it takes over, and its backing
    /// attributes; `fd` is closed if they cannot be had.
    static func node(openedAt fd: FileDescriptor, volume: LiveVolume) throws -> (node: BackingNode, info: stat) {
        do {
            let info = try volume.io.fstat(fd)
            return (BackingNode(fd: fd, info: info, volume: volume), info)
        } catch {
            volume.io.close(fd)
            throw error
        }
    }

    /// The plaintext attributes of `node`: regular files and symlinks have their plaintext sizes.
    public func attributes(of node: BackingNode) throws -> stat {
        try plaintextAttributes(try io.fstat(node.fd), of: node)
    }

    /// `info`, the backing attributes of `node`, with the plaintext size.
    func plaintextAttributes(_ info: stat, of node: BackingNode) throws -> stat {
        var info = info
        switch info.st_mode & S_IFMT {
        case S_IFREG:
            let size = volume.contentLayout.plaintextSize(backingSize: Int(info.st_size))
            try node.content?.requireCommittedSize(plaintextSize: size, of: node.fd)
            info.st_size = off_t(size)
        case S_IFLNK: info.st_size = off_t(try readlink(node).count)
        default: break
        }
        return info
    }

    public func setMode(_ node: BackingNode, _ mode: mode_t) throws { try io.fchmod(node.fd, mode: mode & 0o7777) }

    /// Changes owner and group; `uid_t.max` / `gid_t.max` keep one.
    public func setOwner(_ node: BackingNode, user: uid_t, group: gid_t) throws {
        try io.fchownat("", in: node.fd, owner: user, group: group)
    }

    public func setTimes(_ node: BackingNode, access: timespec, modification: timespec) throws {
        try io.utimensat(node.fd, access: access, modification: modification)
    }

    public func statfs() throws -> statvfs {
        var info = try io.fstatvfs(root.fd)
        info.f_namemax = UInt(NAME_MAX)
        return info
    }

    /// Makes everything written to the backing file system durable (at unmount).
    public func syncAll() throws {
        // syncfs(2) needs a descriptor opened for reading, not an O_PATH one.
        try io.withOpened(".", in: root.fd, flags: O_RDONLY | O_DIRECTORY) { try io.syncfs($0) }
    }

    // MARK: Directories

    /// A descriptor to list `directory` through (`listing(of:through:)`) and to fsync.
    public func openDirectory(_ directory: BackingNode) throws -> FileDescriptor {
        try openForReading(".", in: directory.fd, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    }

    /// The plaintext names in `directory`, read through `handle`; epochfs's own files hidden.
    /// A name that does not authenticate fails the listing: never a wrong name.
    /// A directory whose IV is lost lists as empty while nothing in it needs the IV, so it
    /// can still be removed; with entries it fails (EIO) until fsck repairs it. A long name
    /// whose side file is missing or empty (a power cut kept the entry, not the side file's
    /// bytes, before any sync acknowledged them) is not listed; fsck moves it out.
    public func listing(of directory: BackingNode, through handle: FileDescriptor) throws -> [ListedEntry] {
        let entries = try checkedEntries(of: directory, through: handle)
        guard !entries.isEmpty else { return [] }
        let iv = try directory.directoryIV()
        return try entries.compactMap { raw in
            var encrypted = raw.name
            if NameCodec.isLongName(raw.name) {
                let side: [UInt8]
                do {
                    side = try io.readFile(raw.name + NameCodec.longNameSuffix, in: handle, limit: 4096)
                } catch let error as SystemError where error.errno == ENOENT {
                    return nil
                }
                guard !side.isEmpty else { return nil }
                encrypted = try NameCodec.longName(ofEntry: raw.name, sideFile: side)
            }
            return ListedEntry(name: try volume.keys.names.decrypt(encrypted, directoryIV: iv), inode: raw.inode, type: raw.type,
                               backingName: raw.name)
        }
    }

    // MARK: Internals

    /// Backing open flags: read-write whenever writing (partial blocks are read back and
    /// re-sealed), never O_APPEND/O_TRUNC/O_CREAT/O_DIRECT, which act on plaintext offsets here.
    static func backingFlags(_ flags: Int32) -> Int32 {
        let access = flags & O_ACCMODE == O_RDONLY ? O_RDONLY : O_RDWR
        return access | (flags & (O_SYNC | O_DSYNC | epochfs_O_NOATIME)) | O_CLOEXEC
    }

    /// A readable or writable descriptor of the object `node` holds by O_PATH.
    func reopen(_ node: BackingNode, flags: Int32) throws -> FileDescriptor {
        try openForReading(SystemIO.procPath(node.fd), in: .currentDirectory, flags: flags)
    }

    /// A descriptor for epochfs's own reads (the records and listings a commit reads): with
    /// O_NOATIME where the daemon may, whatever the mount's options, as they are no one's access.
    func openQuietly(_ name: String, in directory: FileDescriptor, flags: Int32) throws -> FileDescriptor {
        try openForReading(name, in: directory, flags: flags, noatime: true)
    }

    /// `io.open` with O_NOATIME where `noatime` (by default `keepsAccessTimes`), unless the
    /// daemon may not use it on this file (EPERM: it is not the owner and lacks CAP_FOWNER).
    private func openForReading(_ name: String, in directory: FileDescriptor, flags: Int32, noatime: Bool? = nil) throws -> FileDescriptor {
        guard noatime ?? keepsAccessTimes, flags & epochfs_O_NOATIME == 0 else { return try io.open(name, in: directory, flags: flags, mode: 0) }
        do {
            return try io.open(name, in: directory, flags: flags | epochfs_O_NOATIME, mode: 0)
        } catch let error as SystemError where error.errno == EPERM {
            return try io.open(name, in: directory, flags: flags, mode: 0)
        }
    }

    func content(_ node: BackingNode) throws -> FileContent {
        guard let content = node.content else { throw SystemError("content", path: "", errno: node.fileType == S_IFDIR ? EISDIR : EINVAL) }
        return content
    }

    /// The backing name of `name` in `directory`, with its long-name side file if any.
    func backingName(_ name: [UInt8], in directory: BackingNode) throws -> BackingName {
        guard name.count <= Int(NAME_MAX) else { throw SystemError("name", path: "", errno: ENAMETOOLONG) }
        return try volume.keys.names.encrypt(name, directoryIV: try directory.directoryIV())
    }

    /// The root's name IV: made at init; created here only for a backing dir with no entries yet.
    private func ensureRootDirectoryIV() throws {
        try io.withOpened(volume.backing, in: .currentDirectory, flags: O_RDONLY | O_DIRECTORY) { directory in
            guard (try? ivs.read(in: directory)) == nil else { return }
            // No name depends on it yet: an IV file left empty by a power cut is replaced.
            guard try ivs.recreateIfUnused(in: directory) else {
                throw SystemError("open", path: volume.backing + "/" + DirectoryIV.fileName, errno: EIO)
            }
        }
    }
}
