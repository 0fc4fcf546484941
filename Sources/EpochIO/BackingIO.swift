import Glibc
// Descriptors and errnos are swift-system's, in every layer that speaks to EpochIO.
@_exported import SystemPackage

/// Every call epochfs makes on its backing directory, the WAL files included, goes through
/// one of these: `SystemIO` on the real file system, or a test double that records each call
/// in order and fails or tears the one a test names. Methods are named after the system call
/// they make; each makes exactly one (the extension's `…Fully` helpers loop over them).
/// Failures throw `SystemError` with the call's own errno.
public protocol BackingIO: Sendable {
    /// openat(2) of `name` in `directory` (`.currentDirectory` for an absolute path).
    func open(_ name: String, in directory: FileDescriptor, flags: Int32, mode: mode_t) throws -> FileDescriptor
    func close(_ fd: FileDescriptor)
    /// One pread(2): the bytes read, 0 at the end of the file.
    func pread(_ fd: FileDescriptor, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws -> Int
    /// One pwrite(2): the bytes written, which may be fewer than given.
    func pwrite(_ fd: FileDescriptor, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws -> Int
    func fsync(_ fd: FileDescriptor) throws
    func fdatasync(_ fd: FileDescriptor) throws
    func fallocate(_ fd: FileDescriptor, mode: Int32, offset: Int, length: Int) throws
    func ftruncate(_ fd: FileDescriptor, size: Int) throws
    /// The attributes of the object `fd` refers to (an O_PATH descriptor too), not following
    /// a symlink.
    func fstat(_ fd: FileDescriptor) throws -> stat
    /// The attributes of `name` in `directory`, not following a symlink.
    func fstatat(_ name: String, in directory: FileDescriptor) throws -> stat
    func renameat(_ name: String, in directory: FileDescriptor, to newName: String, in newDirectory: FileDescriptor,
                  flags: UInt32) throws
    /// unlinkat(2); `removeDirectory` is AT_REMOVEDIR.
    func unlinkat(_ name: String, in directory: FileDescriptor, removeDirectory: Bool) throws
    func mkdirat(_ name: String, in directory: FileDescriptor, mode: mode_t) throws
    func mknodat(_ name: String, in directory: FileDescriptor, mode: mode_t, device: dev_t) throws
    func symlinkat(_ target: String, _ name: String, in directory: FileDescriptor) throws
    /// The target of the symlink `name` in `directory` ("" for the O_PATH descriptor itself).
    func readlinkat(_ name: String, in directory: FileDescriptor) throws -> [UInt8]
    /// A new name in `directory` for the object open (O_PATH) at `fd`.
    func linkat(_ fd: FileDescriptor, to name: String, in directory: FileDescriptor) throws
    /// Every entry of the directory open at `directory`, except "." and "..".
    func readdir(_ directory: FileDescriptor) throws -> [DirectoryEntry]
    /// Extended attributes of the object open (O_PATH too) at `fd`, not following a symlink's target.
    func getxattr(_ fd: FileDescriptor, name: String, into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    func setxattr(_ fd: FileDescriptor, name: String, value: UnsafeRawBufferPointer, flags: Int32) throws
    func listxattr(_ fd: FileDescriptor, into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    func removexattr(_ fd: FileDescriptor, name: String) throws
    /// Starts writeback of the range's dirty pages without waiting (sync_file_range(2),
    /// SYNC_FILE_RANGE_WRITE). Only a hint: it cannot fail in a way that matters.
    func syncFileRange(_ fd: FileDescriptor, offset: Int, length: Int)
    /// posix_fadvise(2): a hint about how the file will be read; cannot fail in a way that matters.
    func fadvise(_ fd: FileDescriptor, advice: Int32)
    /// How many pages of the range are in the page cache and how many of them are dirty
    /// (cachestat(2)); nil where the kernel cannot tell (before Linux 6.5).
    func cachestat(_ fd: FileDescriptor, offset: Int, length: Int) -> (cached: UInt64, dirty: UInt64)?
    func fchmod(_ fd: FileDescriptor, mode: mode_t) throws
    /// Changes the owner of `name` in `directory` ("" for the descriptor itself); -1 keeps one.
    func fchownat(_ name: String, in directory: FileDescriptor, owner: uid_t, group: gid_t) throws
    /// Sets access and modification times (UTIME_NOW and UTIME_OMIT allowed).
    func utimensat(_ fd: FileDescriptor, access: timespec, modification: timespec) throws
    func fstatvfs(_ fd: FileDescriptor) throws -> statvfs
    func syncfs(_ fd: FileDescriptor) throws
    /// flock(2) with LOCK_EX, LOCK_SH or LOCK_UN.
    func flock(_ fd: FileDescriptor, operation: Int32) throws
    /// name_to_handle_at(2) of the object open (O_PATH too) at `fd`.
    func nameToHandle(_ fd: FileDescriptor) throws -> BackingFileHandle
    /// open_by_handle_at(2) of `handle` on the file system `mount` is on; ESTALE once the
    /// object is gone. Needs CAP_DAC_READ_SEARCH.
    func openByHandle(_ handle: BackingFileHandle, mount: FileDescriptor, flags: Int32) throws -> FileDescriptor
}

/// What the backing file system names an object by for as long as it exists, across
/// remounts (`name_to_handle_at(2)`): on ext4 its inode number and generation.
public struct BackingFileHandle: Sendable, Hashable {
    public let type: Int32
    public let bytes: [UInt8]

    public init(type: Int32, bytes: [UInt8]) {
        self.type = type
        self.bytes = bytes
    }
}

public struct DirectoryEntry: Sendable, Equatable {
    public let name: String
    public let inode: UInt64
    /// `d_type` (DT_REG, DT_DIR, ...).
    public let type: UInt8

    public init(name: String, inode: UInt64, type: UInt8) {
        self.name = name
        self.inode = inode
        self.type = type
    }
}

/// The one loop for each "all of it" job: full reads and writes, whole small files.
extension BackingIO {
    /// Fills `buffer` from `offset`, stopping early only at the end of the file; the bytes read.
    public func preadFully(_ fd: FileDescriptor, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws -> Int {
        var filled = 0
        while filled < buffer.count {
            let count = try pread(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]), at: offset + filled)
            if count == 0 { break }
            filled += count
        }
        return filled
    }

    /// Up to `count` bytes from `offset`, fewer only at the end of the file.
    public func preadFully(_ fd: FileDescriptor, count: Int, at offset: Int) throws -> [UInt8] {
        guard count > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: count)
        let filled = try bytes.withUnsafeMutableBytes { try preadFully(fd, into: $0, at: offset) }
        bytes.removeLast(count - filled)
        return bytes
    }

    /// Writes all of `bytes` at `offset`, going on after short writes.
    public func pwriteFully(_ fd: FileDescriptor, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var written = 0
        while written < bytes.count {
            let count = try pwrite(fd, UnsafeRawBufferPointer(rebasing: bytes[written...]), at: offset + written)
            // A regular file takes at least one byte or fails with an errno; 0 would loop forever.
            guard count > 0 else { throw SystemError("write", path: "", errno: EIO) }
            written += count
        }
    }

    public func pwriteFully(_ fd: FileDescriptor, _ bytes: [UInt8], at offset: Int) throws {
        try bytes.withUnsafeBytes { try pwriteFully(fd, $0, at: offset) }
    }

    /// The size of the file open at `fd`.
    public func size(_ fd: FileDescriptor) throws -> Int { Int(try fstat(fd).st_size) }

    /// Everything in the small file `name` in `directory`, failing (EFBIG) past `limit` bytes.
    public func readFile(_ name: String, in directory: FileDescriptor, limit: Int) throws -> [UInt8] {
        let fd = try open(name, in: directory, flags: O_RDONLY | O_CLOEXEC | O_NOFOLLOW, mode: 0)
        defer { close(fd) }
        let bytes = try preadFully(fd, count: limit + 1, at: 0)
        guard bytes.count <= limit else { throw SystemError("read", path: name, errno: EFBIG) }
        return bytes
    }

    /// Every entry of the directory at `path`, except "." and "..".
    public func readdir(at path: String) throws -> [DirectoryEntry] {
        try withOpened(path, in: .currentDirectory, flags: O_RDONLY | O_DIRECTORY) { try readdir($0) }
    }

    /// Runs `body` with `name` in `directory` opened with `flags`, closing it afterwards.
    public func withOpened<R>(_ name: String, in directory: FileDescriptor, flags: Int32, mode: mode_t = 0,
                              _ body: (FileDescriptor) throws -> R) throws -> R {
        let fd = try open(name, in: directory, flags: flags | O_CLOEXEC, mode: mode)
        defer { close(fd) }
        return try body(fd)
    }
}

extension FileDescriptor {
    /// AT_FDCWD: the `in:` of a call on an absolute path (or one relative to the cwd).
    public static let currentDirectory = FileDescriptor(rawValue: AT_FDCWD)
}
