import CFuse3
import EpochFormat
import CLinux
import EpochVolume
import Glibc
import Logging

/// The state every FUSE callback works on. libfuse calls on its own threads; everything here
/// is immutable or guarded (Mutex, atomics, locks), never actor-isolated.
final class Frontend: Sendable {
    static let attributeTimeout = 1.0

    let backing: String
    let table: InodeTable
    let keys: VolumeKeys
    let counters = VolumeCounters()
    let symlinks: SymlinkCodec
    let xattrs: XattrCodec
    let control: ControlFiles
    /// Writes hold it shared; a live rekey holds it exclusively while it installs the new
    /// keyring, so no write that started before the rekey seals after it returns.
    let epochGate = ReadWriteLock()
    let readahead = Readahead()
    let logger = Logger(label: "epochfs.mount")

    init(backing: String, journal: HeaderJournal, header: VolumeHeader) throws {
        self.backing = backing
        let keys = try VolumeKeys(header: header)
        self.keys = keys
        symlinks = SymlinkCodec(keys: keys)
        xattrs = try XattrCodec(keys: keys, nameKey: header.keyring.nameKey)
        let rootFD = retryingEINTR { open(backing, epochfs_O_PATH | O_DIRECTORY | O_CLOEXEC) }
        guard rootFD >= 0 else { throw SystemError("open", path: backing) }
        var info = stat()
        guard fstat(rootFD, &info) == 0 else { throw SystemError("stat", path: backing) }
        table = InodeTable(root: Inode(fd: rootFD, identity: .init(device: UInt64(info.st_dev), inode: UInt64(info.st_ino)),
                                       fileType: S_IFDIR, content: nil))
        control = ControlFiles(journal: journal, header: header, keys: keys, counters: counters, epochGate: epochGate)
    }

    func makeContent() -> FileContent { FileContent(keys: keys, counters: counters) }

    // MARK: Names

    /// The backing name of `name` in `directory`, with its long-name side file if any.
    func backingName(_ name: UnsafePointer<CChar>, in directory: Inode) throws -> BackingName {
        let bytes = Array(UnsafeRawBufferPointer(start: name, count: strlen(name)))
        guard bytes.count <= Int(NAME_MAX) else { throw SystemError("name", path: "", errno: ENAMETOOLONG) }
        return try keys.names.encrypt(bytes, directoryIV: try directory.ivOrRead())
    }

    /// Writes the side file a long name needs, before the entry itself is created.
    func prepare(_ name: BackingName, in directory: Inode) throws {
        guard let sideFile = name.sideFile, let full = name.longName else { return }
        try BackingFile.create(at: directory.fd, sideFile, bytes: Array(full.utf8))
    }

    /// Removes the side file of a long name whose entry is gone.
    func discard(_ name: BackingName, in directory: Inode) {
        if let sideFile = name.sideFile { unlinkat(directory.fd, sideFile, 0) }
    }

    // MARK: Attributes

    /// The plaintext attributes of a backing object: sizes of regular files and symlinks are
    /// the plaintext sizes.
    func attributes(of inode: Inode) throws -> stat {
        var info = stat()
        guard fstatat(inode.fd, "", &info, epochfs_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 else {
            throw SystemError("stat", path: "")
        }
        try translate(&info, fd: inode.fd)
        return info
    }

    func translate(_ info: inout stat, fd: Int32) throws {
        switch info.st_mode & S_IFMT {
        case S_IFREG:
            info.st_size = off_t(ContentLayout(blockSize: keys.blockSize).plaintextSize(backingSize: Int(info.st_size)))
        case S_IFLNK:
            info.st_size = off_t(try readSymlink(fd: fd).count)
        default:
            break
        }
    }

    /// The target stored in a backing symlink (`name` "" for the object `fd` itself).
    func backingLinkTarget(_ fd: Int32, _ name: String = "") throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = buffer.withUnsafeMutableBufferPointer { readlinkat(fd, name, $0.baseAddress!, $0.count) }
        guard length >= 0 else { throw SystemError("readlink", path: "") }
        return Array(buffer.prefix(length))
    }

    func readSymlink(fd: Int32) throws -> [UInt8] {
        let backingTarget = try backingLinkTarget(fd)
        guard let sideFile = SymlinkCodec.sideFileName(backingTarget) else { return try symlinks.decrypt(inline: backingTarget) }
        let sideFD = retryingEINTR { openat(table.root.fd, SymlinkCodec.sidePrefix + sideFile, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0) }
        guard sideFD >= 0 else { throw SystemError("readlink", path: SymlinkCodec.sidePrefix + sideFile) }
        defer { close(sideFD) }
        return try symlinks.decrypt(sealed: try BackingFile.readAll(fd: sideFD, limit: 2 * SymlinkCodec.maxTarget))
    }

    /// Creates the backing symlink for `target`, first writing the side file of a long one.
    func createSymlink(target: [UInt8], in directory: Inode, name: String) throws {
        let (backingTarget, side) = try symlinks.encrypt(target)
        if let side {
            if mkdirat(table.root.fd, SymlinkCodec.sideDirectory, 0o700) != 0 && Glibc.errno != EEXIST {
                throw SystemError("mkdir", path: SymlinkCodec.sideDirectory)
            }
            try BackingFile.create(at: table.root.fd, SymlinkCodec.sidePrefix + side.name, bytes: side.bytes)
        }
        guard symlinkat(backingTarget, directory.fd, name) == 0 else {
            let failure = SystemError("symlink", path: "")
            if let side { unlinkat(table.root.fd, SymlinkCodec.sidePrefix + side.name, 0) }
            throw failure
        }
    }

    /// The side file of `name` in `directory` if it is the last link of a long symlink: to be
    /// removed once the entry is gone (unlinked or renamed over).
    func longSymlinkSideFile(ifLastLinkOf name: String, in directory: Inode) -> String? {
        var info = stat()
        guard fstatat(directory.fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0, info.st_mode & S_IFMT == S_IFLNK, info.st_nlink == 1 else {
            return nil
        }
        guard let target = try? backingLinkTarget(directory.fd, name) else { return nil }
        return SymlinkCodec.sideFileName(target).map { SymlinkCodec.sidePrefix + $0 }
    }

    func removeSideFile(_ path: String?) {
        if let path { unlinkat(table.root.fd, path, 0) }
    }

    /// Looks up `backingName` in `parent` and registers it with the kernel.
    func enter(_ backingName: String, in parent: Inode) throws -> (Inode, stat) {
        let fd = retryingEINTR { openat(parent.fd, backingName, epochfs_O_PATH | O_NOFOLLOW | O_CLOEXEC, 0) }
        guard fd >= 0 else { throw SystemError("lookup", path: "") }
        var info = stat()
        guard fstatat(fd, "", &info, epochfs_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 else {
            let error = SystemError("stat", path: "")
            close(fd)
            throw error
        }
        let inode = table.remember(fd: fd, stat: info, makeContent: makeContent)
        try translate(&info, fd: inode.fd)
        return (inode, info)
    }

    func entryParameters(_ inode: Inode, _ info: stat) -> fuse_entry_param {
        var entry = fuse_entry_param()
        entry.ino = fuse_ino_t(table.nodeID(of: inode))
        entry.attr = info
        entry.attr_timeout = Self.attributeTimeout
        entry.entry_timeout = Self.attributeTimeout
        return entry
    }

    /// As root with `allow_other`, what another user creates belongs to them in the backing dir.
    /// Only when the caller is someone else: a chown is a metadata write on the backing fs.
    func giveOwnership(fd: Int32, name: String, request: fuse_req_t) {
        guard geteuid() == 0, let context = fuse_req_ctx(request),
              context.pointee.uid != geteuid() || context.pointee.gid != getegid() else { return }
        fchownat(fd, name, context.pointee.uid, context.pointee.gid, AT_SYMLINK_NOFOLLOW)
    }

    // MARK: Set-ID bits

    /// What ext4 does on a write or truncate by a caller without CAP_FSETID: set-user-ID goes,
    /// and set-group-ID too when the group may execute. With FUSE_CAP_HANDLE_KILLPRIV the
    /// kernel leaves this to us, and the backing fs would not do it, since the daemon writes as
    /// root. Callers other than root count as lacking CAP_FSETID.
    func dropSetIDBits(fd: Int32, request: fuse_req_t) throws {
        guard let context = fuse_req_ctx(request), context.pointee.uid != 0 else { return }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SystemError("stat", path: "") }
        let mode = info.st_mode & 0o7777
        var kept = mode & ~S_ISUID
        if kept & S_IXGRP != 0 { kept &= ~S_ISGID }
        guard kept != mode else { return }
        guard fchmod(fd, kept) == 0 else { throw SystemError("chmod", path: "") }
    }

    // MARK: Errors

    /// The errno a failure becomes. Authentication failures and every other integrity problem
    /// are EIO, with a log line; never wrong data.
    func errno(for error: any Error, _ operation: String) -> Int32 {
        switch error {
        case let error as SystemError:
            return error.errno
        case let error as ContentError:
            logger.error("integrity failure", metadata: ["operation": "\(operation)", "error": "\(error)"])
            return EIO
        case let error as NameError:
            counters.authenticationFailures.add(1, ordering: .relaxed)
            logger.error("bad name", metadata: ["operation": "\(operation)", "error": "\(error)"])
            return EIO
        default:
            logger.error("failure", metadata: ["operation": "\(operation)", "error": "\(error)"])
            return EIO
        }
    }
}
