import CFuse3
import EpochFormat
import CLinux
import EpochVolume
import Glibc

/// The low-level FUSE callbacks. Static and not isolated to any actor: libfuse calls them on
/// its worker threads. Each finds the shared `Frontend` through the session's userdata.
enum Operations {
    static func frontend(_ request: fuse_req_t?) -> Frontend {
        let fs = Unmanaged<Frontend>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
        fs.readahead.applyIfPending()
        return fs
    }

    /// Runs `body`, replying with the errno of whatever it throws.
    static func replying(_ request: fuse_req_t?, _ operation: String, _ body: (Frontend) throws -> Void) {
        let fs = frontend(request)
        do {
            try body(fs)
        } catch {
            fuse_reply_err(request, fs.errno(for: error, operation))
        }
    }

    static func check(_ result: Int32, _ operation: String) throws {
        if result != 0 { throw SystemError(operation, path: "") }
    }

    /// Capabilities beyond libfuse's defaults. Every readdir is a readdirplus, not only those
    /// the kernel guesses a stat will follow (READDIRPLUS_AUTO): `rm -rf` and `find` would
    /// otherwise send a LOOKUP per entry. Lookups and readdirs in one directory may run in
    /// parallel: the inode table and the backing fs are safe for it. Set-ID bits are ours to
    /// drop on write and truncate (`Frontend.dropSetIDBits`), which spares the kernel a GETATTR
    /// before every chown. (libfuse 3.14 forgets to send the last two: see `InitReply`.)
    static func negotiate(_ connection: UnsafeMutablePointer<fuse_conn_info>) {
        connection.pointee.want &= ~UInt32(FUSE_CAP_READDIRPLUS_AUTO)
        connection.pointee.want |= UInt32(FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_HANDLE_KILLPRIV) & connection.pointee.capable
    }

    // MARK: Entries

    static func lookup(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        replying(request, "lookup") { fs in
            if let virtual = fs.control.lookup(parent: UInt64(parent), name: String(cString: name!)) {
                var entry = virtual
                fuse_reply_entry(request, &entry)
                return
            }
            guard !ControlFiles.owns(UInt64(parent)) else { throw SystemError("lookup", path: "", errno: ENOENT) }
            let directory = fs.table.inode(UInt64(parent))
            let backing = try fs.backingName(name!, in: directory)
            let (inode, info) = try fs.enter(backing.name, in: directory)
            var entry = fs.entryParameters(inode, info)
            fuse_reply_entry(request, &entry)
        }
    }

    static func forget(_ request: fuse_req_t?, _ node: fuse_ino_t, _ lookups: UInt64) {
        let fs = frontend(request)
        if !ControlFiles.owns(UInt64(node)) { fs.table.forget(UInt64(node), count: lookups) }
        fuse_reply_none(request)
    }

    static func forgetMulti(_ request: fuse_req_t?, _ count: Int, _ forgets: UnsafeMutablePointer<fuse_forget_data>?) {
        let fs = frontend(request)
        for item in UnsafeBufferPointer(start: forgets, count: count) where !ControlFiles.owns(UInt64(item.ino)) {
            fs.table.forget(UInt64(item.ino), count: item.nlookup)
        }
        fuse_reply_none(request)
    }

    static func getattr(_ request: fuse_req_t?, _ node: fuse_ino_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "getattr") { fs in
            var attributes = try fs.control.attributes(UInt64(node)) ?? fs.attributes(of: fs.table.inode(UInt64(node)))
            fuse_reply_attr(request, &attributes, Frontend.attributeTimeout)
        }
    }

    static func setattr(_ request: fuse_req_t?, _ node: fuse_ino_t, _ wanted: UnsafeMutablePointer<stat>?, _ toSet: Int32,
                        _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "setattr") { fs in
            guard !ControlFiles.owns(UInt64(node)) else { throw SystemError("setattr", path: "", errno: EPERM) }
            let inode = fs.table.inode(UInt64(node))
            let wanted = wanted!.pointee
            if toSet & FUSE_SET_ATTR_MODE != 0 {
                try check(fchmodat(AT_FDCWD, inode.procPath, wanted.st_mode & 0o7777, 0), "chmod")
            }
            if toSet & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID) != 0 {
                let uid = toSet & FUSE_SET_ATTR_UID != 0 ? wanted.st_uid : uid_t.max
                let gid = toSet & FUSE_SET_ATTR_GID != 0 ? wanted.st_gid : gid_t.max
                try check(fchownat(inode.fd, "", uid, gid, epochfs_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW), "chown")
            }
            if toSet & FUSE_SET_ATTR_SIZE != 0 {
                guard let content = inode.content else { throw SystemError("truncate", path: "", errno: EINVAL) }
                try withWritableFD(inode, file) { fd in
                    try fs.dropSetIDBits(fd: fd, request: request!)
                    try fs.epochGate.withReadLock { try content.truncate(fd: fd, to: Int(wanted.st_size)) }
                }
            }
            if toSet & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW) != 0 {
                var times = [timespec(tv_sec: 0, tv_nsec: epochfs_UTIME_OMIT), timespec(tv_sec: 0, tv_nsec: epochfs_UTIME_OMIT)]
                if toSet & FUSE_SET_ATTR_ATIME_NOW != 0 { times[0].tv_nsec = epochfs_UTIME_NOW }
                else if toSet & FUSE_SET_ATTR_ATIME != 0 { times[0] = wanted.st_atim }
                if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 { times[1].tv_nsec = epochfs_UTIME_NOW }
                else if toSet & FUSE_SET_ATTR_MTIME != 0 { times[1] = wanted.st_mtim }
                try check(utimensat(inode.fd, "", times, epochfs_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW), "utimens")
            }
            var attributes = try fs.attributes(of: inode)
            fuse_reply_attr(request, &attributes, Frontend.attributeTimeout)
        }
    }

    /// The open handle's descriptor, or a fresh read-write one for a truncate by path.
    static func withWritableFD(_ inode: Inode, _ file: UnsafeMutablePointer<fuse_file_info>?, _ body: (Int32) throws -> Void) throws {
        if let file, file.pointee.fh != 0 { return try body(Handle.fd(file.pointee.fh)) }
        let fd = retryingEINTR { Glibc.open(inode.procPath, O_RDWR | O_CLOEXEC) }
        guard fd >= 0 else { throw SystemError("open", path: "") }
        defer { close(fd) }
        try body(fd)
    }

    static func readlink(_ request: fuse_req_t?, _ node: fuse_ino_t) {
        replying(request, "readlink") { fs in
            let target = try fs.readSymlink(fd: fs.table.inode(UInt64(node)).fd)
            (target + [0]).withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { _ = fuse_reply_readlink(request, $0.baseAddress) }
            }
        }
    }

    /// Creates an entry through `make(directoryFD, backingName)` and replies with it.
    static func createEntry(_ request: fuse_req_t?, _ operation: String, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?,
                            _ make: (Frontend, Inode, String) throws -> Void) {
        replying(request, operation) { fs in
            guard !ControlFiles.owns(UInt64(parent)) else { throw SystemError(operation, path: "", errno: EPERM) }
            if fs.control.isReserved(parent: UInt64(parent), name: String(cString: name!)) {
                throw SystemError(operation, path: "", errno: EEXIST)
            }
            let directory = fs.table.inode(UInt64(parent))
            let backing = try fs.backingName(name!, in: directory)
            try fs.prepare(backing, in: directory)
            do {
                try make(fs, directory, backing.name)
            } catch {
                if let failure = error as? SystemError, failure.errno != EEXIST { fs.discard(backing, in: directory) }
                throw error
            }
            fs.giveOwnership(fd: directory.fd, name: backing.name, request: request!)
            let (inode, info) = try fs.enter(backing.name, in: directory)
            var entry = fs.entryParameters(inode, info)
            fuse_reply_entry(request, &entry)
        }
    }

    static func mknod(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t, _ device: dev_t) {
        createEntry(request, "mknod", parent, name) { _, directory, backing in
            try check(mknodat(directory.fd, backing, mode, device), "mknod")
        }
    }

    static func mkdir(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t) {
        createEntry(request, "mkdir", parent, name) { fs, directory, backing in
            try check(mkdirat(directory.fd, backing, mode), "mkdir")
            let fd = retryingEINTR { openat(directory.fd, backing, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0) }
            do {
                guard fd >= 0 else { throw SystemError("open", path: "") }
                defer { close(fd) }
                try DirectoryIV.create(directoryFD: fd)
                fs.giveOwnership(fd: fd, name: DirectoryIV.fileName, request: request!)
            } catch {
                unlinkat(directory.fd, backing, AT_REMOVEDIR)
                throw error
            }
        }
    }

    static func symlink(_ request: fuse_req_t?, _ target: UnsafePointer<CChar>?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        createEntry(request, "symlink", parent, name) { fs, directory, backing in
            let plain = Array(UnsafeRawBufferPointer(start: target!, count: strlen(target!)))
            guard plain.count <= SymlinkCodec.maxTarget else { throw SystemError("symlink", path: "", errno: ENAMETOOLONG) }
            try fs.createSymlink(target: plain, in: directory, name: backing)
        }
    }

    static func link(_ request: fuse_req_t?, _ node: fuse_ino_t, _ newParent: fuse_ino_t, _ newName: UnsafePointer<CChar>?) {
        createEntry(request, "link", newParent, newName) { fs, directory, backing in
            let inode = fs.table.inode(UInt64(node))
            try check(linkat(AT_FDCWD, inode.procPath, directory.fd, backing, AT_SYMLINK_FOLLOW), "link")
        }
    }

    static func unlink(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        replying(request, "unlink") { fs in
            guard !ControlFiles.owns(UInt64(parent)) else { throw SystemError("unlink", path: "", errno: EPERM) }
            let directory = fs.table.inode(UInt64(parent))
            let backing = try fs.backingName(name!, in: directory)
            let sideFile = fs.longSymlinkSideFile(ifLastLinkOf: backing.name, in: directory)
            try check(unlinkat(directory.fd, backing.name, 0), "unlink")
            fs.discard(backing, in: directory)
            fs.removeSideFile(sideFile)
            fuse_reply_err(request, 0)
        }
    }

    static func rmdir(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        replying(request, "rmdir") { fs in
            guard !ControlFiles.owns(UInt64(parent)) else { throw SystemError("rmdir", path: "", errno: EPERM) }
            let directory = fs.table.inode(UInt64(parent))
            let backing = try fs.backingName(name!, in: directory)
            let fd = retryingEINTR { openat(directory.fd, backing.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0) }
            guard fd >= 0 else { throw SystemError("rmdir", path: "") }
            defer { close(fd) }
            // Only the IV may be left: then it goes, and the directory with it.
            guard try BackingDirectory.names(fd: fd).allSatisfy({ $0.name == DirectoryIV.fileName }) else {
                throw SystemError("rmdir", path: "", errno: ENOTEMPTY)
            }
            let iv = try DirectoryIV.read(directoryFD: fd)
            try check(unlinkat(fd, DirectoryIV.fileName, 0), "rmdir")
            guard unlinkat(directory.fd, backing.name, AT_REMOVEDIR) == 0 else {
                let failure = SystemError("rmdir", path: "")
                try? DirectoryIV.restore(iv, directoryFD: fd)
                throw failure
            }
            fs.discard(backing, in: directory)
            fuse_reply_err(request, 0)
        }
    }

    static func rename(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ newParent: fuse_ino_t,
                       _ newName: UnsafePointer<CChar>?, _ flags: UInt32) {
        replying(request, "rename") { fs in
            guard !ControlFiles.owns(UInt64(parent)), !ControlFiles.owns(UInt64(newParent)),
                  !fs.control.isReserved(parent: UInt64(newParent), name: String(cString: newName!)) else {
                throw SystemError("rename", path: "", errno: EPERM)
            }
            let from = fs.table.inode(UInt64(parent)), to = fs.table.inode(UInt64(newParent))
            let old = try fs.backingName(name!, in: from)
            let new = try fs.backingName(newName!, in: to)
            try fs.prepare(new, in: to)
            let moving = flags & epochfs_RENAME_EXCHANGE == 0 && !(from === to && old == new)
            let replacedSideFile = moving ? fs.longSymlinkSideFile(ifLastLinkOf: new.name, in: to) : nil
            try check(epochfs_renameat2(from.fd, old.name, to.fd, new.name, flags), "rename")
            // An exchange keeps both names in place; a move leaves the old name unused.
            if moving {
                fs.discard(old, in: from)
                fs.removeSideFile(replacedSideFile)
            }
            fuse_reply_err(request, 0)
        }
    }

    static func statfs(_ request: fuse_req_t?, _ node: fuse_ino_t) {
        replying(request, "statfs") { fs in
            var info = statvfs()
            try check(fstatvfs(fs.table.root.fd, &info), "statfs")
            info.f_namemax = UInt(NAME_MAX)
            fuse_reply_statfs(request, &info)
        }
    }
}
