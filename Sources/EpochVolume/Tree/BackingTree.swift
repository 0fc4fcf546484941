import CLinux
import EpochCrypto
import EpochFormat
import EpochIO
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
    private struct UnsyncedSideFile {
        let file: FileDescriptor
        let directory: FileDescriptor
    }

    /// Side files not yet durable. Every fsync, fdatasync and fsyncdir makes them durable
    /// before its own call, so nothing a caller made durable names a side file that is not:
    /// a directory made durable has its IV, a long name its side file, a long symlink its link
    /// file (docs/FORMAT.md §1.4). Without an fsync nothing is promised, as on any file system.
    private let unsynced = Mutex<[UnsyncedSideFile]>([])
    /// Beyond this many (say, an untar of thousands of directories with no fsync), one syncfs
    /// makes them all durable at once instead of holding more descriptors.
    private static let unsyncedLimit = 256
    /// Up to this many are fsync'd one by one; more take one syncfs, which is cheaper.
    private static let unsyncedOneByOne = 4

    /// Held shared by everything that adds, removes, renames or looks up entries, and
    /// exclusively by a reseal that replaces an entry by a rename after reading it (a symlink,
    /// or a regular file copied): nothing may take, remove or reach that name in between.
    let namespace = ReadWriteLock()
    /// Held by whatever changes an xattr, so that a reseal never writes back a value that was
    /// replaced or removed after it read it.
    private let xattrChanges = Mutex(())
    /// The name a symlink or copy-on-write reseal creates the new symlink or file under before
    /// renaming it over the old one (docs/FORMAT.md §1); left behind only by a crash in
    /// between, and then replaced.
    static let resealName = "epochfs.reseal"
    /// The backing file system's largest file, for `maxFileSize` (RequestLimits.swift).
    let backingSizeLimit = BackingSizeLimit()
    /// A `noatime` mount's: backing files and directories are read with O_NOATIME. The kernel
    /// leaves a FUSE file's atime to the daemon, so the backing reads would set it otherwise.
    let keepsAccessTimes: Bool

    var io: any BackingIO { volume.io }
    var ivs: DirectoryIV { volume.directoryIVs }

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
    func backingNode(_ backingPath: String, in directory: FileDescriptor) throws -> (node: BackingNode, info: stat) {
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
        case S_IFREG: info.st_size = off_t(volume.contentLayout.plaintextSize(backingSize: Int(info.st_size)))
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

    // MARK: Creating and removing entries

    /// Creates (or with O_CREAT alone opens) the regular file `name` and opens it with `flags`.
    public func create(_ name: [UInt8], in directory: BackingNode, flags: Int32, mode: mode_t,
                       owner: Owner?) throws -> (FileDescriptor, BackingNode, stat) {
        var handle: FileDescriptor?
        do {
            var (node, info) = try createEntry(name, in: directory, owner: owner) { backingName in
                handle = try io.open(backingName, in: directory.fd,
                                     flags: Self.backingFlags(flags) | O_CREAT | (flags & O_EXCL) | O_NOFOLLOW, mode: mode)
            }
            if flags & O_TRUNC != 0, let content = node.content, info.st_size > 0 {
                try content.truncate(fd: handle!, to: 0)
                info.st_size = 0
            }
            return (handle!, node, info)
        } catch {
            if let handle { io.close(handle) }
            throw error
        }
    }

    public func mkdir(_ name: [UInt8], in directory: BackingNode, mode: mode_t, owner: Owner?) throws -> (BackingNode, stat) {
        try createEntry(name, in: directory, owner: owner) { backingName in
            try io.mkdirat(backingName, in: directory.fd, mode: mode)
            do {
                let created = try io.open(backingName, in: directory.fd, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, mode: 0)
                do {
                    io.close(try ivs.write(try SecureRandom.bytes(DirectoryIV.size), in: created))
                    if let owner { try? io.fchownat(DirectoryIV.fileName, in: created, owner: owner.user, group: owner.group) }
                    awaitSync(try io.open(DirectoryIV.fileName, in: created, flags: O_RDONLY | O_NOFOLLOW | O_CLOEXEC, mode: 0), in: created)
                } catch {
                    io.close(created)
                    throw error
                }
            } catch {
                try? io.unlinkat(backingName + "/" + DirectoryIV.fileName, in: directory.fd, removeDirectory: false)
                try? io.unlinkat(backingName, in: directory.fd, removeDirectory: true)
                throw error
            }
        }
    }

    /// A fifo, socket or device node: stored as itself under its encrypted name.
    public func mknod(_ name: [UInt8], in directory: BackingNode, mode: mode_t, device: dev_t, owner: Owner?) throws -> (BackingNode, stat) {
        try createEntry(name, in: directory, owner: owner) { try io.mknodat($0, in: directory.fd, mode: mode, device: device) }
    }

    /// A symlink to `target`, sealed under the active epoch (docs/FORMAT.md §5.4).
    public func symlink(_ target: [UInt8], named name: [UInt8], in directory: BackingNode, owner: Owner?) throws -> (BackingNode, stat) {
        guard target.count <= SymlinkCodec.maxTarget else { throw SystemError("symlink", path: "", errno: ENAMETOOLONG) }
        return try createEntry(name, in: directory, owner: owner) { backingName in
            try volume.sealing { epoch in
                let (backingTarget, side) = try volume.symlinks.encrypt(target, epoch: epoch)
                if let side { try writeLinkFile(side.name, bytes: side.bytes) }
                do {
                    try io.symlinkat(backingTarget, backingName, in: directory.fd)
                } catch {
                    if let side { try? io.unlinkat(SymlinkCodec.sidePrefix + side.name, in: root.fd, removeDirectory: false) }
                    throw error
                }
            }
        }
    }

    /// A hard link: a backing hard link, so both names share the file id and its content.
    public func link(_ node: BackingNode, as name: [UInt8], in directory: BackingNode) throws -> (BackingNode, stat) {
        // No owner: the object keeps the one it has.
        try createEntry(name, in: directory, owner: nil) { try io.linkat(node.fd, to: $0, in: directory.fd) }
    }

    public func unlink(_ name: [UInt8], in directory: BackingNode) throws {
        try namespace.withReadLock { try unlinkEntry(name, in: directory) }
    }

    private func unlinkEntry(_ name: [UInt8], in directory: BackingNode) throws {
        let backing = try backingName(name, in: directory)
        let sideFile = longSymlinkSideFile(ifLastLinkOf: backing.name, in: directory)
        try removing([(backing.name, directory)]) { try io.unlinkat(backing.name, in: directory.fd, removeDirectory: false) }
        discardSideFile(of: backing, in: directory)
        removeLinkFile(sideFile)
    }

    public func rmdir(_ name: [UInt8], in directory: BackingNode) throws {
        try namespace.withReadLock { try removeDirectory(name, in: directory) }
    }

    private func removeDirectory(_ name: [UInt8], in directory: BackingNode) throws {
        let backing = try backingName(name, in: directory)
        try io.withOpened(backing.name, in: directory.fd, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW) { removed in
            // Only the IV may be left: then it goes, and the directory with it.
            guard try io.readdir(removed).allSatisfy({ DirectoryIV.isOwnFile($0.name) }) else {
                throw SystemError("rmdir", path: "", errno: ENOTEMPTY)
            }
            // An IV lost in a power cut (missing or empty) does not keep an empty directory.
            let iv = try? ivs.read(in: removed)
            // Let go before the IV goes: the parent's record binds the directory by it.
            try removing([(backing.name, directory)]) {
                try removeOwnFiles(in: removed)
                do {
                    try io.unlinkat(backing.name, in: directory.fd, removeDirectory: true)
                } catch {
                    if let iv, let restored = try? ivs.write(iv, in: removed) { io.close(restored) }
                    throw error
                }
            }
        }
        discardSideFile(of: backing, in: directory)
    }

    /// rename(2) with its flags (RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT).
    public func rename(_ name: [UInt8], in from: BackingNode, to newName: [UInt8], in to: BackingNode, flags: UInt32) throws {
        try namespace.withReadLock { try renameEntry(name, in: from, to: newName, in: to, flags: flags) }
    }

    private func renameEntry(_ name: [UInt8], in from: BackingNode, to newName: [UInt8], in to: BackingNode, flags: UInt32) throws {
        let old = try backingName(name, in: from)
        let new = try backingName(newName, in: to)
        try writeLongNameSideFile(of: new, in: to)
        let moving = flags & epochfs_RENAME_EXCHANGE == 0 && !(from === to && old == new)
        let replacedLinkFile = moving ? longSymlinkSideFile(ifLastLinkOf: new.name, in: to) : nil
        // The old name leaves (or becomes a whiteout, or the other entry) and the new one names
        // another object: both are let go first, before anything of theirs changes.
        let changed = old == new && from === to ? [] : [(old.name, from), (new.name, to)]
        try removing(changed) {
            // A directory renamed over an empty one: the target's IV is all it holds, and it goes
            // first, as in rmdir (and comes back if the rename fails).
            let displaced = moving && flags & epochfs_RENAME_NOREPLACE == 0 ? try removeIVOfEmptyTarget(new.name, in: to, movedFrom: (old.name, from)) : nil
            defer { if let displaced { io.close(displaced.directory) } }
            do {
                try io.renameat(old.name, in: from.fd, to: new.name, in: to.fd, flags: flags)
            } catch {
                if let displaced, let iv = displaced.iv, let restored = try? ivs.write(iv, in: displaced.directory) {
                    io.close(restored)
                }
                throw error
            }
        }
        // An exchange keeps both names in place; a move leaves the old name unused, unless a
        // whiteout (RENAME_WHITEOUT, as overlayfs asks) now takes it: a long one keeps its side file.
        if moving {
            if flags & epochfs_RENAME_WHITEOUT == 0 { discardSideFile(of: old, in: from) }
            removeLinkFile(replacedLinkFile)
        }
    }

    /// When both `source` and the target `name` in `directory` are directories and the target
    /// holds nothing but its IV, removes that IV; returns it (nil if unreadable) and the
    /// target, open, for a restore. nil when the rename replaces no empty directory.
    private func removeIVOfEmptyTarget(_ name: String, in directory: BackingNode,
                                       movedFrom source: (name: String, directory: BackingNode))
        throws -> (iv: [UInt8]?, directory: FileDescriptor)? {
        guard let target = try? io.fstatat(name, in: directory.fd), target.st_mode & S_IFMT == S_IFDIR,
              let moved = try? io.fstatat(source.name, in: source.directory.fd), moved.st_mode & S_IFMT == S_IFDIR,
              target.st_ino != moved.st_ino || target.st_dev != moved.st_dev else { return nil }
        let opened = try io.open(name, in: directory.fd, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, mode: 0)
        do {
            guard try io.readdir(opened).allSatisfy({ DirectoryIV.isOwnFile($0.name) }) else {
                io.close(opened)
                return nil // not empty: the rename fails with ENOTEMPTY by itself
            }
            let iv = try? ivs.read(in: opened)
            try removeOwnFiles(in: opened)
            return (iv, opened)
        } catch {
            io.close(opened)
            throw error
        }
    }

    /// Removes the IV file of an empty directory (open at `directory`), and a record a crash
    /// left on its way there.
    private func removeOwnFiles(in directory: FileDescriptor) throws {
        for name in [DirectoryIV.pendingName, DirectoryIV.fileName] {
            do {
                try io.unlinkat(name, in: directory, removeDirectory: false)
            } catch let error as SystemError where error.errno == ENOENT {}
        }
    }

    /// The plaintext target of the symlink `node`.
    public func readlink(_ node: BackingNode) throws -> [UInt8] {
        try volume.symlinks.decrypt(sealed: try sealedTarget(node).sealed)
    }

    /// The sealed target of the symlink `node` (docs/FORMAT.md §5.4), from the backing target
    /// or its link file, whose name comes with it.
    func sealedTarget(_ node: BackingNode) throws -> (sealed: [UInt8], linkFile: String?) {
        let backingTarget = try io.readlinkat("", in: node.fd)
        guard let sideFile = SymlinkCodec.sideFileName(backingTarget) else {
            return (try SymlinkCodec.decode(inline: backingTarget), nil)
        }
        return (try io.readFile(SymlinkCodec.sidePrefix + sideFile, in: root.fd, limit: 2 * SymlinkCodec.maxTarget), sideFile)
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
                encrypted = String(decoding: side, as: UTF8.self)
            }
            return ListedEntry(name: try volume.keys.names.decrypt(encrypted, directoryIV: iv), inode: raw.inode, type: raw.type,
                               backingName: raw.name)
        }
    }

    // MARK: File content

    /// Opens the regular file (or other non-directory) `node` with `flags`; O_TRUNC empties it.
    public func open(_ node: BackingNode, flags: Int32, caller: Caller) throws -> FileDescriptor {
        let fd = try reopen(node, flags: Self.backingFlags(flags))
        guard let content = node.content else { return fd }
        do {
            if flags & O_TRUNC != 0 {
                try dropSetIDBits(fd, caller: caller)
                try content.truncate(fd: fd, to: 0)
            } else {
                try content.reloadHeader(fd: fd)
            }
        } catch {
            io.close(fd)
            throw error
        }
        return fd
    }

    public func close(_ handle: FileDescriptor) { io.close(handle) }

    /// Reads up to `count` plaintext bytes at `offset` through `handle`, handed to `deliver`.
    public func read<R>(_ node: BackingNode, through handle: FileDescriptor, offset: Int, count: Int,
                        _ deliver: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard offset >= 0, count >= 0 else { throw SystemError("read", path: "", errno: EINVAL) }
        return try content(node).read(fd: handle, offset: offset, count: count, deliver)
    }

    /// Writes `data` at `offset` (at the end when nil: O_APPEND), as `caller`. Returns how
    /// many bytes it wrote: as on ext4, a write reaching past the largest file is cut short
    /// there, and one starting at or past it fails with EFBIG.
    @discardableResult
    public func write(_ node: BackingNode, through handle: FileDescriptor, offset: Int?, data: UnsafeRawBufferPointer,
                      caller: Caller) throws -> Int {
        let content = try content(node)
        let count = try writableCount(at: offset ?? content.size(fd: handle), data.count)
        try dropSetIDBits(handle, caller: caller)
        try content.write(fd: handle, offset: offset, data: UnsafeRawBufferPointer(rebasing: data[0..<count]))
        return count
    }

    /// Sets the plaintext size, through `handle` or, for a truncate by path, a descriptor of its own.
    public func truncate(_ node: BackingNode, to size: Int, through handle: FileDescriptor?, caller: Caller) throws {
        guard let content = node.content else { throw SystemError("truncate", path: "", errno: EINVAL) }
        try checkRange(offset: size, length: 0, "truncate")
        let fd = try handle ?? reopen(node, flags: O_RDWR | O_CLOEXEC)
        defer { if handle == nil { io.close(fd) } }
        try dropSetIDBits(fd, caller: caller)
        try content.truncate(fd: fd, to: size)
    }

    /// fallocate(2) on the plaintext (FileContent.allocate).
    public func allocate(_ node: BackingNode, through handle: FileDescriptor, mode: Int32, offset: Int, length: Int,
                         caller: Caller) throws {
        // Every mode, as the kernel checks it for ext4 before the file system sees the call.
        try checkRange(offset: offset, length: length, "fallocate")
        let content = try content(node)
        try dropSetIDBits(handle, caller: caller)
        try content.allocate(fd: handle, mode: mode, offset: offset, length: length)
    }

    /// fsync(2) or fdatasync(2) of a handle of `node` (a file or directory), after the side
    /// files written since the last one.
    public func sync(_ handle: FileDescriptor, of node: BackingNode, dataOnly: Bool) throws {
        if node.fileType == S_IFDIR { return try commitDirectory(node, through: handle) }
        try syncSideFiles()
        if let content = node.content {
            try content.sync(fd: handle, dataOnly: dataOnly)
        } else {
            try dataOnly ? io.fdatasync(handle) : io.fsync(handle)
        }
    }

    /// Makes every side file written so far durable, with its directory entry.
    public func syncSideFiles() throws {
        let pending = unsynced.withLock { list in
            defer { list = [] }
            return list
        }
        guard !pending.isEmpty else { return }
        do {
            if pending.count <= Self.unsyncedOneByOne {
                for side in pending {
                    try io.fsync(side.file)
                    try io.fsync(side.directory)
                }
            } else {
                try syncAll()
            }
        } catch {
            unsynced.withLock { $0 = pending + $0 } // still to do: the next fsync tries again
            throw error
        }
        for side in pending {
            io.close(side.file)
            io.close(side.directory)
        }
    }

    /// Holds the side file `name` just written in the directory whose O_PATH descriptor is
    /// `directory` until the next fsync of anything. Read-only descriptors do for fsync, and
    /// hold nothing of the backing dir open for writing.
    private func awaitSync(_ name: String, in directory: FileDescriptor) throws {
        let file = try io.open(name, in: directory, flags: O_RDONLY | O_NOFOLLOW | O_CLOEXEC, mode: 0)
        let containing: FileDescriptor
        do {
            containing = try openForSync(directory)
        } catch {
            io.close(file)
            throw error
        }
        awaitSync(file, in: containing)
    }

    /// Holds a side file just written (open at `file`, in the directory open at `directory`)
    /// until the next fsync of anything; takes over both descriptors.
    private func awaitSync(_ file: FileDescriptor, in directory: FileDescriptor) {
        let count = unsynced.withLock { list in
            list.append(UnsyncedSideFile(file: file, directory: directory))
            return list.count
        }
        // A failure here is the next fsync's to report: it tries again.
        if count > Self.unsyncedLimit { try? syncSideFiles() }
    }

    /// Opens the directory whose O_PATH descriptor is `directory`, for an fsync.
    private func openForSync(_ directory: FileDescriptor) throws -> FileDescriptor {
        try io.open(".", in: directory, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC, mode: 0)
    }

    // MARK: Extended attributes (docs/FORMAT.md §5.5)

    /// Sets a `user.` attribute, its value sealed under the active epoch. Other namespaces are
    /// not stored (EOPNOTSUPP); symlinks take none (EPERM).
    public func setXattr(_ node: BackingNode, name: String, value: [UInt8], flags: Int32) throws {
        guard let backing = try volume.xattrs.backingName(name) else { throw SystemError("setxattr", path: "", errno: EOPNOTSUPP) }
        // ERANGE, as the kernel answers for a name past XATTR_NAME_MAX.
        guard backing.utf8.count <= Self.maxBackingXattrName else { throw SystemError("setxattr", path: "", errno: ERANGE) }
        guard !node.isSymlink else { throw SystemError("setxattr", path: "", errno: EPERM) }
        try volume.sealing { epoch in try xattrChanges.withLock { _ in
            let sealed = try volume.xattrs.sealValue(value, name: name, epoch: epoch)
            do {
                try sealed.withUnsafeBytes { try io.setxattr(node.fd, name: backing, value: $0, flags: flags) }
            } catch let error as SystemError where error.errno == E2BIG {
                // A value the kernel took whose sealed form is past XATTR_SIZE_MAX: no room
                // for it, as ext4 answers for a value its block cannot hold (docs/FORMAT.md §5.5).
                throw SystemError("setxattr", path: "", errno: ENOSPC)
            }
        } }
    }

    public func getXattr(_ node: BackingNode, name: String) throws -> [UInt8] {
        guard let backing = try volume.xattrs.backingName(name), backing.utf8.count <= Self.maxBackingXattrName, !node.isSymlink else {
            throw SystemError("getxattr", path: "", errno: ENODATA)
        }
        var sealed = [UInt8](repeating: 0, count: Self.maxXattrValue + 64)
        let length = try sealed.withUnsafeMutableBytes { try io.getxattr(node.fd, name: backing, into: $0) }
        return try volume.xattrs.openValue(Array(sealed.prefix(length)), name: name)
    }

    /// The plaintext names of `node`'s `user.` attributes.
    public func listXattrs(_ node: BackingNode) throws -> [String] {
        guard !node.isSymlink else { return [] }
        var raw = [UInt8](repeating: 0, count: Self.maxXattrValue)
        let length = try raw.withUnsafeMutableBytes { try io.listxattr(node.fd, into: $0) }
        return try raw.prefix(length).split(separator: 0).compactMap {
            try volume.xattrs.name(ofBacking: String(decoding: $0, as: UTF8.self))
        }
    }

    public func removeXattr(_ node: BackingNode, name: String) throws {
        guard let backing = try volume.xattrs.backingName(name), backing.utf8.count <= Self.maxBackingXattrName, !node.isSymlink else {
            throw SystemError("removexattr", path: "", errno: ENODATA)
        }
        try xattrChanges.withLock { _ in try io.removexattr(node.fd, name: backing) }
    }

    // MARK: Re-encryption

    /// Reseals every `user.` attribute value of `node` that names an epoch older than the active
    /// one under the active epoch, with the same value; one setxattr each replaces it whole.
    /// Returns how many it resealed, and the values as left by the epoch they name; a value that
    /// does not open is left as it is.
    func resealXattrs(_ node: BackingNode) throws -> (resealed: Int, keyIDs: [UInt32: Int]) {
        guard !node.isSymlink else { return (0, [:]) }
        var raw = [UInt8](repeating: 0, count: Self.maxXattrValue)
        let length = try raw.withUnsafeMutableBytes { try io.listxattr(node.fd, into: $0) }
        var resealed = 0
        var keyIDs: [UInt32: Int] = [:]
        for backingName in raw.prefix(length).split(separator: 0).map({ String(decoding: $0, as: UTF8.self) }) {
            guard let name = try? volume.xattrs.name(ofBacking: backingName) else { continue }
            let left: UInt32? = try volume.sealing { epoch in try xattrChanges.withLock { _ in
                var sealed = [UInt8](repeating: 0, count: Self.maxXattrValue + 64)
                let count: Int
                do {
                    count = try sealed.withUnsafeMutableBytes { try io.getxattr(node.fd, name: backingName, into: $0) }
                } catch let error as SystemError where error.errno == ENODATA {
                    return nil // removed since the listing
                }
                sealed.removeLast(sealed.count - count)
                guard let keyID = try? sealed.withUnsafeBytes({ try Envelope.keyID(of: $0) }) else { return nil }
                guard keyID != epoch, let value = try? volume.xattrs.openValue(sealed, name: name) else { return keyID }
                let fresh = try volume.xattrs.sealValue(value, name: name, epoch: epoch)
                try fresh.withUnsafeBytes { try io.setxattr(node.fd, name: backingName, value: $0, flags: epochfs_XATTR_REPLACE) }
                resealed += 1
                return epoch
            } }
            if let left { keyIDs[left, default: 0] += 1 }
        }
        return (resealed, keyIDs)
    }

    /// Runs `body` with a read-write descriptor of the regular file `node` and its content,
    /// opened without reloading the header (the mount's view of it, shadow slots included,
    /// stays as it is); nil when the file is gone.
    func withResealHandle<R>(_ node: BackingNode, _ body: (FileDescriptor, FileContent) throws -> R) throws -> R? {
        let content = try content(node)
        let handle: FileDescriptor
        do {
            handle = try reopen(node, flags: O_RDWR | O_CLOEXEC)
        } catch let error as SystemError where error.errno == ENOENT {
            return nil
        }
        defer { io.close(handle) }
        return try body(handle, content)
    }

    /// Reseals the regular file `node`, stored as `name` in `directory`, by copy-on-write
    /// (docs/FORMAT.md §6.1): a copy with every block under the active epoch and the same
    /// mode, owner, times and xattrs, made durable, replaces it by one rename, so a power cut
    /// leaves the old file or the new one whole. Only for a file of one link, at most
    /// `maxSize` plaintext bytes, that no node but `node` holds (none open, none the mount
    /// knows): with the namespace held, none can appear until the rename is done. Returns nil
    /// when it may not, or when no block names an older epoch: the in-place reseal is the
    /// caller's to run.
    func resealByCopy(_ node: BackingNode, named name: String, in directory: BackingNode, maxSize: Int) throws -> ResealCount? {
        try namespace.withWriteLock {
            guard let content = node.content, content.nodeCount == 1 else { return nil }
            let info = try io.fstat(node.fd)
            guard info.st_nlink == 1, volume.contentLayout.plaintextSize(backingSize: Int(info.st_size)) <= maxSize,
                  let named = try? io.fstatat(name, in: directory.fd), named.st_ino == info.st_ino, named.st_dev == info.st_dev
            else { return nil }
            let original = try reopen(node, flags: O_RDONLY | O_CLOEXEC)
            defer { io.close(original) }
            do {
                try io.unlinkat(Self.resealName, in: directory.fd, removeDirectory: false)
            } catch let error as SystemError where error.errno == ENOENT {}
            let copy = try io.open(Self.resealName, in: directory.fd, flags: O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode: 0o600)
            var renamed = false
            defer {
                io.close(copy)
                if !renamed { try? io.unlinkat(Self.resealName, in: directory.fd, removeDirectory: false) }
            }
            let resealed: ResealCount?
            do {
                resealed = try content.resealedCopy(fd: original, into: copy)
            } catch let error as SystemError where error.errno == ENOSPC || error.errno == EDQUOT {
                return nil // no room for a second copy: the slots need only two blocks
            }
            guard let count = resealed else { return nil }
            try copyAttributes(info, from: node, to: copy)
            // fsync, not fdatasync: mode, owner, times and xattrs must be durable before the name points at the copy.
            try io.fsync(copy)
            try io.renameat(Self.resealName, in: directory.fd, to: name, in: directory.fd, flags: 0)
            renamed = true
            let handle = try openForSync(directory.fd)
            defer { io.close(handle) }
            try io.fsync(handle)
            return count
        }
    }

    /// Gives the file open at `copy` the owner, mode, xattrs (sealed values as they are) and
    /// times of `node`, whose attributes are `info`; times last, which the others would change.
    private func copyAttributes(_ info: stat, from node: BackingNode, to copy: FileDescriptor) throws {
        // Only when it differs: a daemon not run as root may not chown, but owns what it made.
        if info.st_uid != getuid() || info.st_gid != getgid() {
            try io.fchownat("", in: copy, owner: info.st_uid, group: info.st_gid)
        }
        try io.fchmod(copy, mode: info.st_mode & 0o7777) // after the chown, which drops set-ID bits
        var names = [UInt8](repeating: 0, count: Self.maxXattrValue)
        let length = try names.withUnsafeMutableBytes { try io.listxattr(node.fd, into: $0) }
        var value = [UInt8](repeating: 0, count: Self.maxXattrValue + 64)
        for name in names.prefix(length).split(separator: 0).map({ String(decoding: $0, as: UTF8.self) }) {
            let count = try value.withUnsafeMutableBytes { try io.getxattr(node.fd, name: name, into: $0) }
            do {
                try value.withUnsafeBytes { try io.setxattr(copy, name: name, value: UnsafeRawBufferPointer(rebasing: $0[0..<count]), flags: 0) }
            } catch let error as SystemError where !name.hasPrefix("user.") && (error.errno == EPERM || error.errno == EOPNOTSUPP) {
                // Not epochfs's (security labels and the like): what the backing fs allows is kept.
            }
        }
        try io.utimensat(copy, access: info.st_atim, modification: info.st_mtim)
    }

    /// Reseals the target of the symlink stored as `name` in `directory` under the active epoch
    /// when it names an older one: a new symlink with the same target, owner and times (a long
    /// target's link file written and made durable first) replaces it by one rename, so a crash
    /// leaves the old one or the new one (docs/FORMAT.md §5.4). Returns whether it resealed, and
    /// the epoch the symlink's target names now (nil: gone, or too damaged to name one).
    /// Names hard-linked to the same symlink stay as they were: each becomes a symlink of its own.
    func resealSymlink(_ name: String, in directory: BackingNode) throws -> (resealed: Bool, keyID: UInt32?, linkFile: String?) {
        try namespace.withWriteLock { try volume.sealing { epoch in
            let node: BackingNode, info: stat
            do {
                (node, info) = try backingNode(name, in: directory.fd)
            } catch let error as SystemError where error.errno == ENOENT {
                return (false, nil, nil)
            }
            guard node.isSymlink else { return (false, nil, nil) }
            let (sealed, oldLinkFile) = try sealedTarget(node)
            guard let keyID = SymlinkCodec.keyID(ofSealed: sealed) else { return (false, nil, oldLinkFile) }
            guard keyID != epoch, let target = try? volume.symlinks.decrypt(sealed: sealed) else { return (false, keyID, oldLinkFile) }
            let (backingTarget, side) = try volume.symlinks.encrypt(target, epoch: epoch, targetID: try FileID(sealed.prefix(FileID.byteCount)))
            if let side {
                try writeLinkFile(side.name, bytes: side.bytes)
                try syncSideFiles() // before any name points to it
            }
            do {
                try io.unlinkat(Self.resealName, in: directory.fd, removeDirectory: false)
            } catch let error as SystemError where error.errno == ENOENT {}
            try io.symlinkat(backingTarget, Self.resealName, in: directory.fd)
            if info.st_uid != getuid() || info.st_gid != getgid() {
                try? io.fchownat(Self.resealName, in: directory.fd, owner: info.st_uid, group: info.st_gid)
            }
            try setTimes(try backingNode(Self.resealName, in: directory.fd).node, access: info.st_atim, modification: info.st_mtim)
            try io.renameat(Self.resealName, in: directory.fd, to: name, in: directory.fd, flags: 0)
            // Other names of a hard-linked symlink still point to the old link file.
            if info.st_nlink == 1 { removeLinkFile(oldLinkFile.map { SymlinkCodec.sidePrefix + $0 }) }
            return (true, epoch, side?.name)
        } }
    }

    /// Removes the link files that no symlink uses (`inUse`, as a walk of the whole volume
    /// found them): what a symlink reseal killed between its steps leaves. Offline only: on a
    /// mount, a symlink being made has its link file before its name. Returns how many.
    func removeLinkFiles(except inUse: Set<String>) throws -> Int {
        let names: [String]
        do {
            names = try io.readdir(at: volume.backing + "/" + SymlinkCodec.sidePrefix).map(\.name).filter { $0 != "." && $0 != ".." }
        } catch let error as SystemError where error.errno == ENOENT {
            return 0
        }
        let unused = names.filter { !inUse.contains($0) }
        for name in unused { removeLinkFile(SymlinkCodec.sidePrefix + name) }
        return unused.count
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

    /// `io.open` with O_NOATIME where `keepsAccessTimes`, unless the daemon may not use it on
    /// this file (EPERM: it is not the owner and lacks CAP_FOWNER).
    private func openForReading(_ name: String, in directory: FileDescriptor, flags: Int32) throws -> FileDescriptor {
        guard keepsAccessTimes, flags & epochfs_O_NOATIME == 0 else { return try io.open(name, in: directory, flags: flags, mode: 0) }
        do {
            return try io.open(name, in: directory, flags: flags | epochfs_O_NOATIME, mode: 0)
        } catch let error as SystemError where error.errno == EPERM {
            return try io.open(name, in: directory, flags: flags, mode: 0)
        }
    }

    private func content(_ node: BackingNode) throws -> FileContent {
        guard let content = node.content else { throw SystemError("content", path: "", errno: node.fileType == S_IFDIR ? EISDIR : EINVAL) }
        return content
    }

    /// The backing name of `name` in `directory`, with its long-name side file if any.
    private func backingName(_ name: [UInt8], in directory: BackingNode) throws -> BackingName {
        guard name.count <= Int(NAME_MAX) else { throw SystemError("name", path: "", errno: ENAMETOOLONG) }
        return try volume.keys.names.encrypt(name, directoryIV: try directory.directoryIV())
    }

    /// Creates an entry through `make(backingName)`: the long name's side file first, then the
    /// entry, then its owner.
    private func createEntry(_ name: [UInt8], in directory: BackingNode, owner: Owner?,
                             _ make: (String) throws -> Void) throws -> (BackingNode, stat) {
        try namespace.withReadLock { try createEntryLocked(name, in: directory, owner: owner, make) }
    }

    private func createEntryLocked(_ name: [UInt8], in directory: BackingNode, owner: Owner?,
                                   _ make: (String) throws -> Void) throws -> (BackingNode, stat) {
        let backing = try backingName(name, in: directory)
        try writeLongNameSideFile(of: backing, in: directory)
        do {
            try make(backing.name)
        } catch {
            // EEXIST: the side file belongs to the entry that is there.
            if (error as? SystemError)?.errno != EEXIST { discardSideFile(of: backing, in: directory) }
            throw error
        }
        // A chown is a metadata write on the backing fs, so only when someone else asked.
        if let owner { try? giveNewEntry(backing.name, in: directory, to: owner) }
        return try locateLocked(backingName: backing.name, in: directory)
    }

    /// Writes the side file a long name needs, before the entry itself is created.
    private func writeLongNameSideFile(of name: BackingName, in directory: BackingNode) throws {
        guard let sideFile = name.sideFile, let full = name.longName else { return }
        try writeSideFile(sideFile, in: directory.fd, bytes: Array(full.utf8))
    }

    /// Writes a long symlink's link file into `epochfs.links/`, made on first use.
    private func writeLinkFile(_ name: String, bytes: [UInt8]) throws {
        do {
            try io.mkdirat(SymlinkCodec.sideDirectory, in: root.fd, mode: 0o700)
            try awaitSync(SymlinkCodec.sideDirectory, in: root.fd)
        } catch let error as SystemError where error.errno == EEXIST {}
        let links = try io.open(SymlinkCodec.sideDirectory, in: root.fd, flags: epochfs_O_PATH | O_DIRECTORY | O_CLOEXEC, mode: 0)
        defer { io.close(links) }
        try writeSideFile(name, in: links, bytes: bytes)
    }

    /// Removes the side file of a long name whose entry is gone.
    private func discardSideFile(of name: BackingName, in directory: BackingNode) {
        if let sideFile = name.sideFile { try? io.unlinkat(sideFile, in: directory.fd, removeDirectory: false) }
    }

    /// Creates (or replaces) a side file holding `bytes`, mode 0400, in the directory open
    /// (O_PATH) at `directory`; durable with the next fsync.
    private func writeSideFile(_ name: String, in directory: FileDescriptor, bytes: [UInt8]) throws {
        try io.withOpened(name, in: directory, flags: O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode: 0o400) {
            try io.pwriteFully($0, bytes, at: 0)
        }
        try awaitSync(name, in: directory)
    }

    /// The link file of `name` in `directory` if it is the last link of a long symlink: to be
    /// removed once the entry is gone (unlinked or renamed over).
    private func longSymlinkSideFile(ifLastLinkOf name: String, in directory: BackingNode) -> String? {
        guard let info = try? io.fstatat(name, in: directory.fd), info.st_mode & S_IFMT == S_IFLNK, info.st_nlink == 1,
              let target = try? io.readlinkat(name, in: directory.fd) else { return nil }
        return SymlinkCodec.sideFileName(target).map { SymlinkCodec.sidePrefix + $0 }
    }

    private func removeLinkFile(_ path: String?) {
        if let path { try? io.unlinkat(path, in: root.fd, removeDirectory: false) }
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
