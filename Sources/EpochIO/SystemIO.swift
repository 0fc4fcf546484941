import CLinux
import Glibc
import SystemPackage

/// `BackingIO` on the real file system. Reads and writes go through swift-system, which
/// retries EINTR; the calls it lacks go through `call`, which does the same.
public struct SystemIO: BackingIO {
    public init() {}

    public func open(_ name: String, in directory: FileDescriptor, flags: Int32, mode: mode_t) throws -> FileDescriptor {
        FileDescriptor(rawValue: try call("open", name) { openat(directory.rawValue, name, flags, mode) })
    }

    public func close(_ fd: FileDescriptor) { try? fd.close() }

    public func pread(_ fd: FileDescriptor, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws -> Int {
        do {
            return try fd.read(fromAbsoluteOffset: Int64(offset), into: buffer)
        } catch let error as Errno {
            throw SystemError("read", path: "", error)
        }
    }

    public func pwrite(_ fd: FileDescriptor, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws -> Int {
        do {
            return try fd.write(toAbsoluteOffset: Int64(offset), bytes)
        } catch let error as Errno {
            throw SystemError("write", path: "", error)
        }
    }

    public func fsync(_ fd: FileDescriptor) throws { try call("fsync", "") { Glibc.fsync(fd.rawValue) } }

    public func fdatasync(_ fd: FileDescriptor) throws { try call("fdatasync", "") { Glibc.fdatasync(fd.rawValue) } }

    public func fallocate(_ fd: FileDescriptor, mode: Int32, offset: Int, length: Int) throws {
        try call("fallocate", "") { epochfs_fallocate(fd.rawValue, mode, offset, length) }
    }

    public func ftruncate(_ fd: FileDescriptor, size: Int) throws {
        try call("truncate", "") { Glibc.ftruncate(fd.rawValue, off_t(size)) }
    }

    public func fstat(_ fd: FileDescriptor) throws -> stat {
        var info = stat()
        try call("stat", "") { Glibc.fstatat(fd.rawValue, "", &info, epochfs_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) }
        return info
    }

    public func fstatat(_ name: String, in directory: FileDescriptor) throws -> stat {
        var info = stat()
        try call("stat", name) { Glibc.fstatat(directory.rawValue, name, &info, AT_SYMLINK_NOFOLLOW) }
        return info
    }

    public func renameat(_ name: String, in directory: FileDescriptor, to newName: String, in newDirectory: FileDescriptor,
                         flags: UInt32) throws {
        try call("rename", name) { epochfs_renameat2(directory.rawValue, name, newDirectory.rawValue, newName, flags) }
    }

    public func unlinkat(_ name: String, in directory: FileDescriptor, removeDirectory: Bool) throws {
        try call(removeDirectory ? "rmdir" : "unlink", name) { Glibc.unlinkat(directory.rawValue, name, removeDirectory ? AT_REMOVEDIR : 0) }
    }

    public func mkdirat(_ name: String, in directory: FileDescriptor, mode: mode_t) throws {
        try call("mkdir", name) { Glibc.mkdirat(directory.rawValue, name, mode) }
    }

    public func mknodat(_ name: String, in directory: FileDescriptor, mode: mode_t, device: dev_t) throws {
        try call("mknod", name) { Glibc.mknodat(directory.rawValue, name, mode, device) }
    }

    public func symlinkat(_ target: String, _ name: String, in directory: FileDescriptor) throws {
        try call("symlink", name) { Glibc.symlinkat(target, directory.rawValue, name) }
    }

    public func readlinkat(_ name: String, in directory: FileDescriptor) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = try call("readlink", name) {
            buffer.withUnsafeMutableBufferPointer { Glibc.readlinkat(directory.rawValue, name, $0.baseAddress!, $0.count) }
        }
        return Array(buffer.prefix(length))
    }

    public func linkat(_ fd: FileDescriptor, to name: String, in directory: FileDescriptor) throws {
        try call("link", name) { Glibc.linkat(AT_FDCWD, Self.procPath(fd), directory.rawValue, name, AT_SYMLINK_FOLLOW) }
    }

    public func readdir(_ directory: FileDescriptor) throws -> [DirectoryEntry] {
        // fdopendir takes over the descriptor it is given, and the caller keeps its own.
        let own = try call("opendir", "") { dup(directory.rawValue) }
        guard let stream = fdopendir(own) else {
            let failure = SystemError("opendir", path: "")
            Glibc.close(own)
            throw failure
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var entries: [DirectoryEntry] = []
        while true {
            Glibc.errno = 0
            guard let raw = Glibc.readdir(stream) else {
                if Glibc.errno != 0 { throw SystemError("readdir", path: "") }
                return entries
            }
            let name = withUnsafeBytes(of: raw.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name == "." || name == ".." { continue }
            entries.append(DirectoryEntry(name: name, inode: UInt64(raw.pointee.d_ino), type: raw.pointee.d_type))
        }
    }

    public func getxattr(_ fd: FileDescriptor, name: String, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try call("getxattr", name) { epochfs_getxattr(Self.procPath(fd), name, buffer.baseAddress, UInt(buffer.count)) }
    }

    public func setxattr(_ fd: FileDescriptor, name: String, value: UnsafeRawBufferPointer, flags: Int32) throws {
        try call("setxattr", name) { epochfs_setxattr(Self.procPath(fd), name, value.baseAddress, UInt(value.count), flags) }
    }

    public func listxattr(_ fd: FileDescriptor, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try call("listxattr", "") {
            epochfs_listxattr(Self.procPath(fd), buffer.baseAddress?.assumingMemoryBound(to: CChar.self), UInt(buffer.count))
        }
    }

    public func removexattr(_ fd: FileDescriptor, name: String) throws {
        try call("removexattr", name) { epochfs_removexattr(Self.procPath(fd), name) }
    }

    public func syncFileRange(_ fd: FileDescriptor, offset: Int, length: Int) {
        _ = epochfs_start_writeback(fd.rawValue, Int64(offset), Int64(length))
    }

    public func fadvise(_ fd: FileDescriptor, advice: Int32) { _ = posix_fadvise(fd.rawValue, 0, 0, advice) }

    public func cachestat(_ fd: FileDescriptor, offset: Int, length: Int) -> (cached: UInt64, dirty: UInt64)? {
        var cached: UInt64 = 0, dirty: UInt64 = 0
        guard epochfs_page_cache_pages(fd.rawValue, UInt64(offset), UInt64(length), &cached, &dirty) == 0 else { return nil }
        return (cached, dirty)
    }

    public func fchmod(_ fd: FileDescriptor, mode: mode_t) throws {
        // fchmod(2) refuses O_PATH descriptors; the procfs path reaches the same object.
        try call("chmod", "") { fchmodat(AT_FDCWD, Self.procPath(fd), mode, 0) }
    }

    public func fchownat(_ name: String, in directory: FileDescriptor, owner: uid_t, group: gid_t) throws {
        let flags = AT_SYMLINK_NOFOLLOW | (name.isEmpty ? epochfs_AT_EMPTY_PATH : 0)
        try call("chown", name) { Glibc.fchownat(directory.rawValue, name, owner, group, flags) }
    }

    public func utimensat(_ fd: FileDescriptor, access: timespec, modification: timespec) throws {
        let times = [access, modification]
        try call("utimens", "") { Glibc.utimensat(fd.rawValue, "", times, epochfs_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) }
    }

    public func fstatvfs(_ fd: FileDescriptor) throws -> statvfs {
        var info = statvfs()
        try call("statfs", "") { Glibc.fstatvfs(fd.rawValue, &info) }
        return info
    }

    public func syncfs(_ fd: FileDescriptor) throws { try call("syncfs", "") { epochfs_syncfs(fd.rawValue) } }

    public func flock(_ fd: FileDescriptor, operation: Int32) throws {
        try call("flock", "") { epochfs_flock(fd.rawValue, operation) }
    }

    public func nameToHandle(_ fd: FileDescriptor) throws -> BackingFileHandle {
        var type: Int32 = 0
        var bytes = [UInt8](repeating: 0, count: 128)
        let count = try call("name_to_handle_at", "") { epochfs_name_to_handle(fd.rawValue, &type, &bytes, UInt32(bytes.count)) }
        return BackingFileHandle(type: type, bytes: Array(bytes.prefix(Int(count))))
    }

    public func openByHandle(_ handle: BackingFileHandle, mount: FileDescriptor, flags: Int32) throws -> FileDescriptor {
        FileDescriptor(rawValue: try call("open_by_handle_at", "") {
            epochfs_open_by_handle(mount.rawValue, handle.type, handle.bytes, UInt32(handle.bytes.count), flags)
        })
    }

    /// A path that reaches the object open at `fd` through procfs, for calls without an fd form.
    public static func procPath(_ fd: FileDescriptor) -> String { "/proc/self/fd/\(fd.rawValue)" }

    /// Runs a call that returns -1 and sets errno on failure, retrying EINTR.
    @discardableResult
    private func call<T: SignedInteger>(_ operation: String, _ path: String, _ body: () -> T) throws -> T {
        let result = retryingEINTR(body)
        guard result != -1 else { throw SystemError(operation, path: path) }
        return result
    }
}
