import CFuse3
import CLinux
import EpochIO
import EpochVolume
import Glibc

/// The low-level FUSE callbacks. Static and not isolated to any actor: libfuse calls them on
/// its worker threads. Each finds the shared `Frontend` through the session's userdata, turns
/// the request into calls on the volume's tree (or the control files) and replies; failures
/// reply with their errno.
enum Operations {
    static func frontend(_ request: fuse_req_t?) -> Frontend {
        let fs = Unmanaged<Frontend>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
        fs.readahead.applyIfPending()
        return fs
    }

    /// Runs `body`, replying with the errno of whatever it throws.
    /// `node` names the file in the log line of an integrity failure.
    static func replying(_ request: fuse_req_t?, _ operation: String, node: fuse_ino_t? = nil,
                         entry: UnsafePointer<CChar>? = nil, _ body: (Frontend, Request) throws -> Void) {
        let fs = frontend(request)
        fs.metrics.count(operation)
        do {
            try body(fs, Request(raw: request!))
        } catch {
            let errno = fs.errno(for: error, operation, nodeID: node, entry: entry.map { String(cString: $0) })
            fs.metrics.countError(errno)
            fuse_reply_err(request, errno)
        }
    }

    /// Capabilities beyond libfuse's defaults. Every readdir is a readdirplus, not only those
    /// the kernel guesses a stat will follow (READDIRPLUS_AUTO): `rm -rf` and `find` would
    /// otherwise send a LOOKUP per entry. Lookups and readdirs in one directory may run in
    /// parallel: the inode table and the backing fs are safe for it. Set-ID bits are ours to
    /// drop on write and truncate (`BackingTree.write`), which spares the kernel a GETATTR
    /// before every chown. (libfuse 3.14 forgets to send the last two: see `InitReply`.)
    /// Export support where node ids outlive the kernel's inodes (`NodeIDs`): the kernel then
    /// finds a node it forgot by a LOOKUP of "." in its id (`Frontend.dotEntry`).
    static func negotiate(_ userdata: UnsafeMutableRawPointer?, _ connection: UnsafeMutablePointer<fuse_conn_info>) {
        let fs = Unmanaged<Frontend>.fromOpaque(userdata!).takeUnretainedValue()
        connection.pointee.want &= ~UInt32(FUSE_CAP_READDIRPLUS_AUTO)
        connection.pointee.want |= UInt32(FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_HANDLE_KILLPRIV) & connection.pointee.capable
        if fs.table.ids.exportable { connection.pointee.want |= UInt32(FUSE_CAP_EXPORT_SUPPORT) & connection.pointee.capable }
    }

    // MARK: Entries

    static func lookup(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        replying(request, "lookup", node: parent, entry: name) { fs, request in
            let name = nameBytes(name)
            if name == [0x2e] || name == [0x2e, 0x2e] { return request.replyEntry(try fs.dotEntry(name, in: UInt64(parent))) }
            if let virtual = fs.control.lookup(parent: UInt64(parent), name: name) { return request.replyEntry(virtual) }
            let directory = try fs.backing(parent, orFail: ENOENT)
            request.replyEntry(try fs.entry(try fs.tree.lookup(name, in: directory)))
        }
    }

    static func forget(_ request: fuse_req_t?, _ node: fuse_ino_t, _ lookups: UInt64) {
        let fs = frontend(request)
        fs.metrics.count("forget")
        if !ControlFiles.owns(UInt64(node)) { fs.table.forget(UInt64(node), count: lookups) }
        fuse_reply_none(request)
    }

    static func forgetMulti(_ request: fuse_req_t?, _ count: Int, _ forgets: UnsafeMutablePointer<fuse_forget_data>?) {
        let fs = frontend(request)
        fs.metrics.count("forget")
        for item in UnsafeBufferPointer(start: forgets, count: count) {
            if !ControlFiles.owns(item.ino) { fs.table.forget(item.ino, count: item.nlookup) }
        }
        fuse_reply_none(request)
    }

    static func getattr(_ request: fuse_req_t?, _ node: fuse_ino_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "getattr") { fs, request in
            switch try fs.resolve(node) {
            case let .control(id): request.replyAttributes(fs.control.attributes(id))
            case let .backing(node): request.replyAttributes(try fs.tree.attributes(of: node))
            }
        }
    }

    static func setattr(_ request: fuse_req_t?, _ node: fuse_ino_t, _ wanted: UnsafeMutablePointer<stat>?, _ toSet: Int32,
                        _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "setattr") { fs, request in
            let node = try fs.backing(node, orFail: EPERM)
            let wanted = wanted!.pointee
            // chown(path, -1, -1) changes nothing but the ctime; the kernel sends it with no field.
            let fields = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME
                | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW
            // So does the kernel before a fallocate, to have set-ID bits dropped (HANDLE_KILLPRIV):
            // both drop them as ext4 would, and the reply tells the kernel the mode at once.
            if toSet & fields == 0 {
                try fs.tree.setOwner(node, user: uid_t.max, group: gid_t.max)
                try fs.tree.dropSetIDBits(of: node, caller: request.setIDCaller)
            }
            if toSet & FUSE_SET_ATTR_MODE != 0 { try fs.tree.setMode(node, wanted.st_mode) }
            if toSet & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID) != 0 {
                try fs.tree.setOwner(node, user: toSet & FUSE_SET_ATTR_UID != 0 ? wanted.st_uid : uid_t.max,
                                     group: toSet & FUSE_SET_ATTR_GID != 0 ? wanted.st_gid : gid_t.max)
            }
            if toSet & FUSE_SET_ATTR_SIZE != 0 {
                let handle = file.flatMap { $0.pointee.fh != 0 ? Handle.fd($0.pointee.fh) : nil }
                try fs.tree.truncate(node, to: Int(wanted.st_size), through: handle, caller: request.setIDCaller)
            }
            if toSet & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW) != 0 {
                func time(now: Int32, given: Int32, _ value: timespec) -> timespec {
                    if toSet & now != 0 { return timespec(tv_sec: 0, tv_nsec: epochfs_UTIME_NOW) }
                    return toSet & given != 0 ? value : timespec(tv_sec: 0, tv_nsec: epochfs_UTIME_OMIT)
                }
                try fs.tree.setTimes(node, access: time(now: FUSE_SET_ATTR_ATIME_NOW, given: FUSE_SET_ATTR_ATIME, wanted.st_atim),
                                     modification: time(now: FUSE_SET_ATTR_MTIME_NOW, given: FUSE_SET_ATTR_MTIME, wanted.st_mtim))
            }
            request.replyAttributes(try fs.tree.attributes(of: node))
        }
    }

    static func readlink(_ request: fuse_req_t?, _ node: fuse_ino_t) {
        replying(request, "readlink") { fs, request in
            let target = try fs.tree.readlink(try fs.backing(node, orFail: EINVAL))
            (target + [0]).withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { _ = fuse_reply_readlink(request.raw, $0.baseAddress) }
            }
        }
    }

    static func mknod(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t, _ device: dev_t) {
        replying(request, "mknod") { fs, request in
            let name = nameBytes(name)
            let directory = try fs.directoryForNewEntry(parent, name)
            request.replyEntry(try fs.entry(try fs.tree.mknod(name, in: directory, mode: mode, device: device, owner: request.owner)))
        }
    }

    static func mkdir(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t) {
        replying(request, "mkdir") { fs, request in
            let name = nameBytes(name)
            let directory = try fs.directoryForNewEntry(parent, name)
            request.replyEntry(try fs.entry(try fs.tree.mkdir(name, in: directory, mode: mode, owner: request.owner)))
        }
    }

    static func symlink(_ request: fuse_req_t?, _ target: UnsafePointer<CChar>?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        replying(request, "symlink") { fs, request in
            let name = nameBytes(name)
            let directory = try fs.directoryForNewEntry(parent, name)
            request.replyEntry(try fs.entry(try fs.tree.symlink(nameBytes(target), named: name, in: directory, owner: request.owner)))
        }
    }

    static func link(_ request: fuse_req_t?, _ node: fuse_ino_t, _ newParent: fuse_ino_t, _ newName: UnsafePointer<CChar>?) {
        replying(request, "link") { fs, request in
            let name = nameBytes(newName)
            let directory = try fs.directoryForNewEntry(newParent, name)
            request.replyEntry(try fs.entry(try fs.tree.link(try fs.backing(node, orFail: EPERM), as: name, in: directory)))
        }
    }

    static func unlink(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        replying(request, "unlink", node: parent, entry: name) { fs, request in
            try fs.tree.unlink(nameBytes(name), in: try fs.backing(parent, orFail: EPERM))
            request.replyOK()
        }
    }

    static func rmdir(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        replying(request, "rmdir", node: parent, entry: name) { fs, request in
            try fs.tree.rmdir(nameBytes(name), in: try fs.backing(parent, orFail: EPERM))
            request.replyOK()
        }
    }

    static func rename(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ newParent: fuse_ino_t,
                       _ newName: UnsafePointer<CChar>?, _ flags: UInt32) {
        replying(request, "rename") { fs, request in
            let newName = nameBytes(newName)
            let from = try fs.backing(parent, orFail: EPERM), to = try fs.backing(newParent, orFail: EPERM)
            guard !fs.control.isReserved(parent: UInt64(newParent), name: newName) else { throw SystemError("rename", path: "", errno: EPERM) }
            try fs.tree.rename(nameBytes(name), in: from, to: newName, in: to, flags: flags)
            request.replyOK()
        }
    }

    static func statfs(_ request: fuse_req_t?, _ node: fuse_ino_t) {
        replying(request, "statfs") { fs, request in
            var info = try fs.tree.statfs()
            fuse_reply_statfs(request.raw, &info)
        }
    }
}
