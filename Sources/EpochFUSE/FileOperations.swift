import CFuse3
import EpochFormat
import CLinux
import EpochVolume
import Glibc
import Synchronization

/// What `fuse_file_info.fh` holds for a regular file: the backing descriptor, and whether the
/// file was opened O_APPEND (the backing file is not: its offsets are not the plaintext's).
enum Handle {
    private static let appendBit: UInt64 = 1 << 32

    static func make(fd: Int32, append: Bool) -> UInt64 { UInt64(UInt32(bitPattern: fd)) | (append ? appendBit : 0) }
    static func fd(_ handle: UInt64) -> Int32 { Int32(bitPattern: UInt32(truncatingIfNeeded: handle)) }
    static func isAppend(_ handle: UInt64) -> Bool { handle & appendBit != 0 }
}

/// A directory listing taken at opendir (and again on rewind), served by offset.
final class DirectoryListing: Sendable {
    struct Entry: Sendable {
        let name: [UInt8]
        let inode: UInt64
        let type: UInt8
        /// The entry in the backing directory; nil for "." and ".." and virtual entries.
        var backingName: String? = nil
    }

    let fd: Int32
    let entries = Mutex<[Entry]>([])

    init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

extension Operations {
    /// Backing open flags: read-write whenever writing (partial blocks are read back and
    /// re-sealed), never O_APPEND/O_TRUNC/O_CREAT/O_DIRECT, which act on plaintext offsets here.
    static func backingFlags(_ flags: Int32) -> Int32 {
        let access = flags & O_ACCMODE == O_RDONLY ? O_RDONLY : O_RDWR
        return access | (flags & (O_SYNC | O_DSYNC | epochfs_O_NOATIME)) | O_CLOEXEC
    }

    static func open(_ request: fuse_req_t?, _ node: fuse_ino_t, _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "open") { fs in
            if try fs.control.open(UInt64(node), file: file!, request: request!) {
                fuse_reply_open(request, file)
                return
            }
            let inode = fs.table.inode(UInt64(node))
            let flags = file!.pointee.flags
            let fd = retryingEINTR { Glibc.open(inode.procPath, backingFlags(flags)) }
            guard fd >= 0 else { throw SystemError("open", path: "") }
            if let content = inode.content {
                do {
                    if flags & O_TRUNC != 0 {
                        try fs.dropSetIDBits(fd: fd, request: request!)
                        try fs.epochGate.withReadLock { try content.truncate(fd: fd, to: 0) }
                    } else {
                        try content.reloadHeader(fd: fd)
                    }
                } catch {
                    close(fd)
                    throw error
                }
            }
            file!.pointee.fh = Handle.make(fd: fd, append: flags & O_APPEND != 0)
            fuse_reply_open(request, file)
        }
    }

    static func create(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t,
                       _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "create") { fs in
            guard !ControlFiles.owns(UInt64(parent)),
                  !fs.control.isReserved(parent: UInt64(parent), name: String(cString: name!)) else {
                throw SystemError("create", path: "", errno: EEXIST)
            }
            let directory = fs.table.inode(UInt64(parent))
            let backing = try fs.backingName(name!, in: directory)
            try fs.prepare(backing, in: directory)
            let flags = file!.pointee.flags
            let fd = retryingEINTR { openat(directory.fd, backing.name, backingFlags(flags) | O_CREAT | (flags & O_EXCL) | O_NOFOLLOW, mode) }
            guard fd >= 0 else { throw SystemError("create", path: "") }
            do {
                fs.giveOwnership(fd: directory.fd, name: backing.name, request: request!)
                var (inode, info) = try fs.enter(backing.name, in: directory)
                if flags & O_TRUNC != 0, let content = inode.content, info.st_size > 0 {
                    try fs.epochGate.withReadLock { try content.truncate(fd: fd, to: 0) }
                    info.st_size = 0
                }
                var entry = fs.entryParameters(inode, info)
                file!.pointee.fh = Handle.make(fd: fd, append: flags & O_APPEND != 0)
                fuse_reply_create(request, &entry, file)
            } catch {
                close(fd)
                throw error
            }
        }
    }

    static func read(_ request: fuse_req_t?, _ node: fuse_ino_t, _ size: Int, _ offset: off_t,
                     _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "read") { fs in
            if let bytes = fs.control.read(UInt64(node), file: file!, size: size, offset: Int(offset)) {
                bytes.withUnsafeBytes { _ = fuse_reply_buf(request, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
                return
            }
            guard let content = fs.table.inode(UInt64(node)).content else { throw SystemError("read", path: "", errno: EISDIR) }
            try content.read(fd: Handle.fd(file!.pointee.fh), offset: Int(offset), count: size) { bytes in
                _ = fuse_reply_buf(request, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
            }
        }
    }

    static func write(_ request: fuse_req_t?, _ node: fuse_ino_t, _ buffer: UnsafePointer<CChar>?, _ size: Int,
                      _ offset: off_t, _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "write") { fs in
            let data = UnsafeRawBufferPointer(start: buffer, count: size)
            if try fs.control.write(UInt64(node), data: data, request: request!) {
                fuse_reply_write(request, size)
                return
            }
            guard let content = fs.table.inode(UInt64(node)).content else { throw SystemError("write", path: "", errno: EISDIR) }
            let handle = file!.pointee.fh
            try fs.dropSetIDBits(fd: Handle.fd(handle), request: request!)
            try fs.epochGate.withReadLock {
                _ = try content.write(fd: Handle.fd(handle), offset: Handle.isAppend(handle) ? nil : Int(offset), data: data)
            }
            fuse_reply_write(request, size)
        }
    }

    static func release(_ request: fuse_req_t?, _ node: fuse_ino_t, _ file: UnsafeMutablePointer<fuse_file_info>?) {
        let fs = frontend(request)
        if !fs.control.release(UInt64(node), file: file!) { close(Handle.fd(file!.pointee.fh)) }
        fuse_reply_err(request, 0)
    }

    static func fsync(_ request: fuse_req_t?, _ node: fuse_ino_t, _ dataOnly: Int32, _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "fsync") { _ in
            let fd = Handle.fd(file!.pointee.fh)
            try check(dataOnly != 0 ? fdatasync(fd) : Glibc.fsync(fd), "fsync")
            fuse_reply_err(request, 0)
        }
    }

    static func fallocate(_ request: fuse_req_t?, _ node: fuse_ino_t, _ mode: Int32, _ offset: off_t, _ length: off_t,
                          _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "fallocate") { fs in
            guard let content = fs.table.inode(UInt64(node)).content else { throw SystemError("fallocate", path: "", errno: ENODEV) }
            switch mode {
            case 0:
                let fd = Handle.fd(file!.pointee.fh)
                let end = Int(offset + length)
                try fs.epochGate.withReadLock {
                    if end > (try content.size(fd: fd)) { try content.truncate(fd: fd, to: end) }
                }
            case epochfs_FALLOC_FL_KEEP_SIZE:
                break // space is reserved by the backing file system as blocks are written
            default:
                throw SystemError("fallocate", path: "", errno: EOPNOTSUPP)
            }
            fuse_reply_err(request, 0)
        }
    }

    // MARK: Directories

    static func opendir(_ request: fuse_req_t?, _ node: fuse_ino_t, _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "opendir") { fs in
            guard !ControlFiles.owns(UInt64(node)) else {
                file!.pointee.fh = 0
                fuse_reply_open(request, file)
                return
            }
            let fd = retryingEINTR { openat(fs.table.inode(UInt64(node)).fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0) }
            guard fd >= 0 else { throw SystemError("opendir", path: "") }
            file!.pointee.fh = UInt64(UInt(bitPattern: Unmanaged.passRetained(DirectoryListing(fd: fd)).toOpaque()))
            fuse_reply_open(request, file)
        }
    }

    static func listing(_ file: UnsafeMutablePointer<fuse_file_info>) -> DirectoryListing? {
        guard file.pointee.fh != 0 else { return nil }
        return Unmanaged<DirectoryListing>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(file.pointee.fh))!).takeUnretainedValue()
    }

    static func readdir(_ request: fuse_req_t?, _ node: fuse_ino_t, _ size: Int, _ offset: off_t,
                        _ file: UnsafeMutablePointer<fuse_file_info>?) {
        listEntries(request, node, size, offset, file, plus: false)
    }

    /// readdir with attributes: `ls -l` and `find` get every entry's attributes (and a kernel
    /// lookup reference) in the listing instead of one lookup request per name.
    static func readdirplus(_ request: fuse_req_t?, _ node: fuse_ino_t, _ size: Int, _ offset: off_t,
                            _ file: UnsafeMutablePointer<fuse_file_info>?) {
        listEntries(request, node, size, offset, file, plus: true)
    }

    static func listEntries(_ request: fuse_req_t?, _ node: fuse_ino_t, _ size: Int, _ offset: off_t,
                            _ file: UnsafeMutablePointer<fuse_file_info>?, plus: Bool) {
        replying(request, plus ? "readdirplus" : "readdir") { fs in
            let entries: [DirectoryListing.Entry]
            let directory = ControlFiles.owns(UInt64(node)) ? nil : fs.table.inode(UInt64(node))
            if let listing = listing(file!), let directory {
                if offset == 0 {
                    let fresh = try decryptedListing(fs, directory: directory, fd: listing.fd)
                    listing.entries.withLock { $0 = fresh }
                }
                entries = listing.entries.withLock { $0 }
            } else {
                entries = fs.control.listing
            }
            var buffer = [CChar](repeating: 0, count: size)
            var used = 0
            var index = Int(offset)
            while index < entries.count {
                let entry = entries[index]
                let name = entry.name.map { CChar(bitPattern: $0) } + [0]
                var param = fuse_entry_param()
                param.attr.st_ino = ino_t(entry.inode)
                param.attr.st_mode = mode_t(entry.type) << 12
                var entered: Inode?
                if plus, let directory, let backingName = entry.backingName {
                    // An entry that vanished since the listing was taken is simply left out.
                    guard let (inode, info) = try? fs.enter(backingName, in: directory) else {
                        index += 1
                        continue
                    }
                    entered = inode
                    param = fs.entryParameters(inode, info)
                }
                let needed = buffer.withUnsafeMutableBufferPointer { out in
                    name.withUnsafeBufferPointer { name in
                        plus ? fuse_add_direntry_plus(request, out.baseAddress! + used, size - used, name.baseAddress, &param, off_t(index + 1))
                            : fuse_add_direntry(request, out.baseAddress! + used, size - used, name.baseAddress, &param.attr, off_t(index + 1))
                    }
                }
                if used + needed > size {
                    // Not sent: the kernel never saw this lookup reference.
                    if let entered { fs.table.forget(fs.table.nodeID(of: entered), count: 1) }
                    break
                }
                used += needed
                index += 1
            }
            fuse_reply_buf(request, buffer, used)
        }
    }

    /// Plaintext names of a backing directory with "." and ".."; epochfs's own files hidden.
    /// A name that does not authenticate fails the listing (EIO): never a wrong name.
    static func decryptedListing(_ fs: Frontend, directory: Inode, fd: Int32) throws -> [DirectoryListing.Entry] {
        let iv = try directory.ivOrRead()
        var entries = [DirectoryListing.Entry(name: [0x2e], inode: directory.identity.inode, type: UInt8(DT_DIR)),
                       // The kernel resolves ".." itself; a non-zero number keeps it listed.
                       DirectoryListing.Entry(name: [0x2e, 0x2e], inode: UInt64(FUSE_ROOT_ID), type: UInt8(DT_DIR))]
        for raw in try BackingDirectory.names(fd: fd) where !NameCodec.isInternal(raw.name) {
            let encrypted = NameCodec.isLongName(raw.name)
                ? try BackingDirectory.longName(raw.name + NameCodec.longNameSuffix, in: fd) : raw.name
            entries.append(.init(name: try fs.keys.names.decrypt(encrypted, directoryIV: iv), inode: raw.inode, type: raw.type,
                                 backingName: raw.name))
        }
        return entries
    }

    static func releasedir(_ request: fuse_req_t?, _ node: fuse_ino_t, _ file: UnsafeMutablePointer<fuse_file_info>?) {
        if file!.pointee.fh != 0 {
            Unmanaged<DirectoryListing>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(file!.pointee.fh))!).release()
        }
        fuse_reply_err(request, 0)
    }

    static func fsyncdir(_ request: fuse_req_t?, _ node: fuse_ino_t, _ dataOnly: Int32, _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "fsyncdir") { _ in
            if let listing = listing(file!) { try check(Glibc.fsync(listing.fd), "fsyncdir") }
            fuse_reply_err(request, 0)
        }
    }
}
