import CFuse3
import EpochIO
import EpochStore
import EpochVolume
import Glibc
import Synchronization

/// What `fuse_file_info.fh` holds for a regular file: the backing descriptor, and whether the
/// file was opened O_APPEND (the backing file is not: its offsets are not the plaintext's).
enum Handle {
    private static let appendBit: UInt64 = 1 << 32

    static func make(_ fd: FileDescriptor, append: Bool) -> UInt64 { UInt64(UInt32(bitPattern: fd.rawValue)) | (append ? appendBit : 0) }
    static func fd(_ handle: UInt64) -> FileDescriptor { FileDescriptor(rawValue: Int32(bitPattern: UInt32(truncatingIfNeeded: handle))) }
    static func isAppend(_ handle: UInt64) -> Bool { handle & appendBit != 0 }
}

/// A directory listing taken at opendir (and again on rewind), served by offset.
final class DirectoryListing: Sendable {
    struct Entry: Sendable {
        let name: [UInt8]
        let inode: UInt64
        let type: UInt8
        /// The entry in the backing directory; nil for "." and ".." and the control files.
        var backingName: String? = nil
    }

    /// The backing directory's descriptor; nil for the control directory.
    let handle: FileDescriptor?
    let tree: BackingTree
    let entries = Mutex<[Entry]>([])

    init(handle: FileDescriptor?, tree: BackingTree) {
        self.handle = handle
        self.tree = tree
    }

    deinit { if let handle { tree.close(handle) } }

    /// The listing of the directory `fh` was opened for.
    static func of(_ file: UnsafeMutablePointer<fuse_file_info>) -> DirectoryListing {
        Unmanaged<DirectoryListing>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(file.pointee.fh))!).takeUnretainedValue()
    }
}

extension Operations {
    /// Regular files keep the kernel's page cache across opens (`keep_cache`): every change to
    /// a file's plaintext goes through this daemon and the kernel (one owner per volume), and
    /// rekey and re-encryption keep the plaintext. A change to the backing dir made behind the
    /// mount is seen only for what the kernel does not keep (docs/FORMAT.md §8.1).
    static func open(_ request: fuse_req_t?, _ node: fuse_ino_t, _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "open") { fs, request in
            let file = file!
            switch try fs.resolve(node) {
            case let .control(id):
                try fs.control.open(id, file: file, caller: request.caller.user)
            case let .backing(node):
                let flags = file.pointee.flags
                let fd = try fs.tree.open(node, flags: flags, caller: request.setIDCaller)
                file.pointee.fh = Handle.make(fd, append: flags & O_APPEND != 0)
                file.pointee.keep_cache = 1
            }
            fuse_reply_open(request.raw, file)
        }
    }

    static func create(_ request: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t,
                       _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "create") { fs, request in
            let name = nameBytes(name)
            let directory = try fs.directoryForNewEntry(parent, name)
            let flags = file!.pointee.flags
            let (fd, node, info) = try fs.tree.create(name, in: directory, flags: flags, mode: mode, owner: request.owner)
            var entry: fuse_entry_param
            do {
                entry = try fs.entry((node, info))
            } catch {
                fs.tree.close(fd)
                throw error
            }
            file!.pointee.fh = Handle.make(fd, append: flags & O_APPEND != 0)
            file!.pointee.keep_cache = 1
            fuse_reply_create(request.raw, &entry, file)
        }
    }

    static func read(_ request: fuse_req_t?, _ node: fuse_ino_t, _ size: Int, _ offset: off_t,
                     _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "read", node: node) { fs, request in
            switch try fs.resolve(node) {
            case let .control(id):
                request.reply(try fs.control.read(id, file: file!, size: size, offset: Int(offset)))
            case let .backing(node):
                try fs.metrics.timed(fs.metrics.readDuration) {
                    try fs.tree.read(node, through: Handle.fd(file!.pointee.fh), offset: Int(offset), count: size) { bytes in
                        fs.metrics.bytesRead.increment(by: bytes.count)
                        request.reply(bytes)
                    }
                }
            }
        }
    }

    static func write(_ request: fuse_req_t?, _ node: fuse_ino_t, _ buffer: UnsafePointer<CChar>?, _ size: Int,
                      _ offset: off_t, _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "write", node: node) { fs, request in
            let data = UnsafeRawBufferPointer(start: buffer, count: size)
            var written = size
            switch try fs.resolve(node) {
            case let .control(id):
                try fs.control.write(id, data: data, caller: request.caller.user)
            case let .backing(node):
                let handle = file!.pointee.fh
                written = try fs.metrics.timed(fs.metrics.writeDuration) {
                    try fs.tree.write(node, through: Handle.fd(handle), offset: Handle.isAppend(handle) ? nil : Int(offset),
                                      data: data, caller: request.setIDCaller)
                }
                fs.metrics.bytesWritten.increment(by: written)
            }
            fuse_reply_write(request.raw, written)
        }
    }

    static func release(_ request: fuse_req_t?, _ node: fuse_ino_t, _ file: UnsafeMutablePointer<fuse_file_info>?) {
        let fs = frontend(request)
        fs.metrics.count("release")
        if ControlFiles.owns(UInt64(node)) {
            fs.control.release(UInt64(node), file: file!)
        } else {
            fs.tree.close(Handle.fd(file!.pointee.fh))
        }
        fuse_reply_err(request, 0)
    }

    static func fsync(_ request: fuse_req_t?, _ node: fuse_ino_t, _ dataOnly: Int32, _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "fsync") { fs, request in
            let backing = try fs.backing(node, orFail: EINVAL)
            try fs.metrics.timed(fs.metrics.fsyncDuration) {
                try fs.tree.sync(Handle.fd(file!.pointee.fh), of: backing, dataOnly: dataOnly != 0)
            }
            request.replyOK()
        }
    }

    static func fallocate(_ request: fuse_req_t?, _ node: fuse_ino_t, _ mode: Int32, _ offset: off_t, _ length: off_t,
                          _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "fallocate") { fs, request in
            let node = try fs.backing(node, orFail: ENODEV)
            try fs.tree.allocate(node, through: Handle.fd(file!.pointee.fh), mode: mode, offset: Int(offset), length: Int(length),
                                  caller: request.setIDCaller)
            request.replyOK()
        }
    }

    // MARK: Directories

    static func opendir(_ request: fuse_req_t?, _ node: fuse_ino_t, _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "opendir") { fs, request in
            let handle: FileDescriptor? = switch try fs.resolve(node) {
            case .control: nil
            case let .backing(directory): try fs.tree.openDirectory(directory)
            }
            file!.pointee.fh = UInt64(UInt(bitPattern: Unmanaged.passRetained(DirectoryListing(handle: handle, tree: fs.tree)).toOpaque()))
            fuse_reply_open(request.raw, file)
        }
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
        replying(request, plus ? "readdirplus" : "readdir") { fs, request in
            guard offset >= 0 else { throw SystemError("readdir", path: "", errno: EINVAL) }
            let listing = DirectoryListing.of(file!)
            let directory: BackingNode?
            let entries: [DirectoryListing.Entry]
            switch try fs.resolve(node) {
            case .control:
                directory = nil
                entries = fs.control.listing
            case let .backing(node):
                directory = node
                if offset == 0 {
                    let fresh = try listedEntries(fs, directory: node, handle: listing.handle!)
                    listing.entries.withLock { $0 = fresh }
                }
                entries = listing.entries.withLock { $0 }
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
                if plus, let directory, let backingName = entry.backingName {
                    // An entry that vanished since the listing was taken is simply left out.
                    guard let found = try? fs.tree.locate(backingName: backingName, in: directory),
                          let entry = try? fs.entry(found) else {
                        index += 1
                        continue
                    }
                    param = entry
                }
                let needed = buffer.withUnsafeMutableBufferPointer { out in
                    name.withUnsafeBufferPointer { name in
                        plus ? fuse_add_direntry_plus(request.raw, out.baseAddress! + used, size - used, name.baseAddress, &param, off_t(index + 1))
                            : fuse_add_direntry(request.raw, out.baseAddress! + used, size - used, name.baseAddress, &param.attr, off_t(index + 1))
                    }
                }
                if used + needed > size {
                    // Not sent: the kernel never saw this lookup reference.
                    if param.ino != 0 { fs.table.forget(UInt64(param.ino), count: 1) }
                    break
                }
                used += needed
                index += 1
            }
            fuse_reply_buf(request.raw, buffer, used)
        }
    }

    /// The tree's listing with "." and "..".
    private static func listedEntries(_ fs: Frontend, directory: BackingNode, handle: FileDescriptor) throws -> [DirectoryListing.Entry] {
        // The kernel resolves ".." itself; a non-zero number keeps it listed.
        [DirectoryListing.Entry(name: [0x2e], inode: directory.identity.inode, type: UInt8(DT_DIR)),
         DirectoryListing.Entry(name: [0x2e, 0x2e], inode: UInt64(FUSE_ROOT_ID), type: UInt8(DT_DIR))]
            + (try fs.tree.listing(of: directory, through: handle)).map {
                DirectoryListing.Entry(name: $0.name, inode: $0.inode, type: $0.type, backingName: $0.backingName)
            }
    }

    static func releasedir(_ request: fuse_req_t?, _ node: fuse_ino_t, _ file: UnsafeMutablePointer<fuse_file_info>?) {
        frontend(request).metrics.count("releasedir")
        Unmanaged<DirectoryListing>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(file!.pointee.fh))!).release()
        fuse_reply_err(request, 0)
    }

    static func fsyncdir(_ request: fuse_req_t?, _ node: fuse_ino_t, _ dataOnly: Int32, _ file: UnsafeMutablePointer<fuse_file_info>?) {
        replying(request, "fsyncdir") { fs, request in
            if let handle = DirectoryListing.of(file!).handle { try fs.tree.sync(handle, of: try fs.backing(node, orFail: EINVAL), dataOnly: false) }
            request.replyOK()
        }
    }
}
