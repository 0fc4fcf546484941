import CLinux
import EpochCrypto
import EpochFormat
import EpochIO
import Glibc

/// Resealing what the tree holds under the active epoch (docs/FORMAT.md §5.4, §5.5, §6.1): the
/// steps `Reencryption` runs, item by item.
extension BackingTree {
    /// Reseals every `user.` attribute value of `node` that names an epoch older than the active
    /// one under the active epoch, with the same value; one setxattr each replaces it whole,
    /// after a record that accepts it (§5.5). Returns how many it resealed, and the values as
    /// left by the epoch they name; a value that does not open is left as it is.
    package func resealXattrs(_ node: BackingNode) throws -> (resealed: Int, keyIDs: [Epoch: Int]) {
        guard !node.isSymlink else { return (0, [:]) }
        return try volume.sealing { epoch in try xattrChanges.withLock { _ in
            let stored = try checkedAttributes(node)
            var resealed = 0
            var keyIDs: [Epoch: Int] = [:]
            for (backingName, sealed) in stored.values {
                guard let name = try? volume.xattrs.name(ofBacking: backingName),
                      let keyID = try? sealed.withUnsafeBytes({ try Envelope.keyID(of: $0) }) else { continue }
                guard keyID != epoch, let value = try? volume.xattrs.openValue(sealed, name: name) else {
                    keyIDs[keyID, default: 0] += 1
                    continue
                }
                let fresh = try volume.xattrs.sealValue(value, name: name, epoch: epoch)
                try changeAttribute(node, name: backingName, value: fresh, flags: epochfs_XATTR_REPLACE)
                resealed += 1
                keyIDs[epoch, default: 0] += 1
            }
            return (resealed, keyIDs)
        } }
    }

    /// Runs `body` with a read-write descriptor of the regular file `node` and its content,
    /// opened without reloading the header (the mount's view of it, shadow slots included,
    /// stays as it is); nil when the file is gone.
    package func withResealHandle<R>(_ node: BackingNode, _ body: (FileDescriptor, FileContent) throws -> R) throws -> R? {
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
    package func resealByCopy(_ node: BackingNode, named name: String, in directory: BackingNode, maxSize: Int) throws -> ResealCount? {
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
    package func resealSymlink(_ name: String, in directory: BackingNode) throws -> (resealed: Bool, keyID: Epoch?, linkFile: String?) {
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
    package func removeLinkFiles(except inUse: Set<String>) throws -> Int {
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
}
