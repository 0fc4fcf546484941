import CLinux
import EpochCrypto
import EpochFormat
import EpochIO
import Glibc

/// Creating, removing and renaming entries (docs/FORMAT.md §1, §5), with their side files and,
/// from format 4, their directories' records (§5.6).
extension BackingTree {
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
                changes.noteChanged(node)
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
        let made = try createEntry(name, in: directory, owner: owner) { backingName in
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
        changes.noteChanged(made.0)
        return made
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
        let removed = changes.objectBeforeRemoval(backing.name, in: directory, of: self)
        try removing([(backing.name, directory)]) { try io.unlinkat(backing.name, in: directory.fd, removeDirectory: false) }
        changes.noteChanged(removed)
        discardSideFile(of: backing, in: directory)
        removeLinkFile(sideFile)
    }

    public func rmdir(_ name: [UInt8], in directory: BackingNode) throws {
        try namespace.withReadLock { try removeDirectory(name, in: directory) }
    }

    func removeDirectory(_ name: [UInt8], in directory: BackingNode) throws {
        let backing = try backingName(name, in: directory)
        let removedObject = changes.objectBeforeRemoval(backing.name, in: directory, of: self)
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
                    if let iv, let restored = try? ivs.write(iv, in: removed, restored: true) { io.close(restored) }
                    throw error
                }
            }
        }
        changes.noteChanged(removedObject)
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
        let replaced = moving ? changes.objectBeforeRemoval(new.name, in: to, of: self) : nil
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
                volume.noteEntriesChanged(in: to)
                if flags & (epochfs_RENAME_EXCHANGE | epochfs_RENAME_WHITEOUT) != 0 { volume.noteEntriesChanged(in: from) }
            } catch {
                if let displaced, let iv = displaced.iv, let restored = try? ivs.write(iv, in: displaced.directory, restored: true) {
                    io.close(restored)
                }
                throw error
            }
        }
        // An exchange keeps both names in place; a move leaves the old name unused, unless a
        // whiteout (RENAME_WHITEOUT, as overlayfs asks) now takes it: a long one keeps its side file.
        changes.noteChanged(replaced)
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
    package func sealedTarget(_ node: BackingNode) throws -> (sealed: [UInt8], linkFile: String?) {
        let backingTarget = try io.readlinkat("", in: node.fd)
        guard let sideFile = SymlinkCodec.sideFileName(backingTarget) else {
            return (try SymlinkCodec.decode(inline: backingTarget), nil)
        }
        let bytes = try io.readFile(SymlinkCodec.sidePrefix + sideFile, in: root.fd, limit: 2 * SymlinkCodec.maxTarget)
        return (try SymlinkCodec.sealedTarget(ofSideFile: sideFile, bytes: bytes), sideFile)
    }

    // MARK: Side files

    /// Creates an entry through `make(backingName)`: the long name's side file first, then the
    /// entry, then its owner.
    func createEntry(_ name: [UInt8], in directory: BackingNode, owner: Owner?,
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
        volume.noteEntriesChanged(in: directory)
        // A chown is a metadata write on the backing fs, so only when someone else asked.
        if let owner { try? giveNewEntry(backing.name, in: directory, to: owner) }
        return try locateLocked(backingName: backing.name, in: directory)
    }

    /// Writes the side file a long name needs, before the entry itself is created.
    func writeLongNameSideFile(of name: BackingName, in directory: BackingNode) throws {
        guard let sideFile = name.sideFile, let full = name.longName else { return }
        try writeSideFile(sideFile, in: directory.fd, bytes: Array(full.utf8))
    }

    /// Writes a long symlink's link file into `epochfs.links/`, made on first use.
    func writeLinkFile(_ name: String, bytes: [UInt8]) throws {
        do {
            try io.mkdirat(SymlinkCodec.sideDirectory, in: root.fd, mode: 0o700)
            try awaitSync(SymlinkCodec.sideDirectory, in: root.fd)
        } catch let error as SystemError where error.errno == EEXIST {}
        let links = try io.open(SymlinkCodec.sideDirectory, in: root.fd, flags: epochfs_O_PATH | O_DIRECTORY | O_CLOEXEC, mode: 0)
        defer { io.close(links) }
        try writeSideFile(name, in: links, bytes: bytes)
    }

    /// Removes the side file of a long name whose entry is gone.
    func discardSideFile(of name: BackingName, in directory: BackingNode) {
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
    func longSymlinkSideFile(ifLastLinkOf name: String, in directory: BackingNode) -> String? {
        guard let info = try? io.fstatat(name, in: directory.fd), info.st_mode & S_IFMT == S_IFLNK, info.st_nlink == 1,
              let target = try? io.readlinkat(name, in: directory.fd) else { return nil }
        return SymlinkCodec.sideFileName(target).map { SymlinkCodec.sidePrefix + $0 }
    }

    func removeLinkFile(_ path: String?) {
        if let path { try? io.unlinkat(path, in: root.fd, removeDirectory: false) }
    }
}
