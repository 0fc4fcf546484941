import EpochIO
import Glibc
import Synchronization

/// A `BackingIO` test double over the real file system: it records every call with its
/// arguments and result, in order, and fails the calls a test names (the Nth of a kind, or
/// every one from the Nth on) with a chosen errno, or lets a write through only in part.
public final class RecordingIO: BackingIO {
    /// The system call a `BackingIO` method makes.
    public enum Kind: String, Sendable, CaseIterable {
        case open, close, pread, pwrite, fsync, fdatasync, fallocate, ftruncate, fstat, fstatat, renameat, unlinkat
        case mkdirat, mknodat, symlinkat, readlinkat, linkat, readdir, getxattr, setxattr, listxattr, removexattr
        case syncFileRange, fadvise, cachestat, fchmod, fchownat, utimensat, fstatvfs, syncfs, flock, nameToHandle, openByHandle
    }

    public enum Fault: Sendable, Equatable {
        /// The call does nothing and fails with this errno.
        case fail(Int32)
        /// A pwrite writes only its first N bytes and returns N (a short write).
        case writePrefix(Int)
        /// The call waits this many seconds, then runs: widens a race for a test to see.
        case pause(Double)
    }

    public struct Call: Sendable, Equatable, CustomStringConvertible {
        public let kind: Kind
        /// The file or directory the call is about, as a path (for a descriptor, where
        /// /proc/self/fd says it is); for a rename or link, the source.
        public let path: String
        /// A rename's or link's destination, a symlink's target, an xattr's name.
        public var other: String? = nil
        public var offset: Int? = nil
        /// Bytes asked for (pread, pwrite, fallocate), the new size (ftruncate), flags (open).
        public var length: Int? = nil
        /// What a pwrite put in the file (after a `writePrefix` fault, only that part).
        public var bytes: [UInt8]? = nil
        /// The call's result (bytes read or written, a new descriptor), or its errno.
        public var result: Result<Int, SystemError> = .success(0)

        public var errno: Int32? {
            if case let .failure(error) = result { return error.errno }
            return nil
        }

        public var description: String {
            var words = ["\(kind.rawValue) \(path)"]
            if let other { words.append("→ \(other)") }
            if let offset { words.append("@\(offset)") }
            if let length { words.append("#\(length)") }
            switch result {
            case let .success(value): words.append("= \(value)")
            case let .failure(error): words.append("= \(String(cString: strerror(error.errno)))")
            }
            return words.joined(separator: " ")
        }
    }

    private struct Plan {
        var kind: Kind
        /// 1-based among the calls of `kind` counted since the plan was made.
        var nth: Int
        var fault: Fault
        var sticky: Bool
    }

    private struct State {
        var calls: [Call] = []
        var counts: [Kind: Int] = [:]
        var plans: [Plan] = []
    }

    private let real = SystemIO()
    private let state = Mutex(State())

    public init() {}

    /// Every call so far, in order.
    public var calls: [Call] { state.withLock { $0.calls } }

    public func calls(_ kind: Kind) -> [Call] { calls.filter { $0.kind == kind } }

    public func clearRecording() { state.withLock { $0.calls = [] } }

    /// Fails the `nth` call of `kind` from now on (1 = the next one) with `fault`; with
    /// `andAfter`, every later call of that kind too (a disk that stays full).
    public func inject(_ fault: Fault, into kind: Kind, nth: Int = 1, andAfter: Bool = false) {
        state.withLock { state in
            state.plans.append(Plan(kind: kind, nth: (state.counts[kind] ?? 0) + nth, fault: fault, sticky: andAfter))
        }
    }

    public func removeFaults() { state.withLock { $0.plans = [] } }

    // MARK: BackingIO

    public func open(_ name: String, in directory: FileDescriptor, flags: Int32, mode: mode_t) throws -> FileDescriptor {
        FileDescriptor(rawValue: Int32(try perform(.open, Call(kind: .open, path: at(directory, name), length: Int(flags))) {
            Int(try real.open(name, in: directory, flags: flags, mode: mode).rawValue)
        }))
    }

    public func close(_ fd: FileDescriptor) {
        _ = try? perform(.close, Call(kind: .close, path: path(fd))) { real.close(fd); return 0 }
    }

    public func pread(_ fd: FileDescriptor, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws -> Int {
        try perform(.pread, Call(kind: .pread, path: path(fd), offset: offset, length: buffer.count)) {
            try real.pread(fd, into: buffer, at: offset)
        }
    }

    public func pwrite(_ fd: FileDescriptor, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws -> Int {
        var call = Call(kind: .pwrite, path: path(fd), offset: offset, length: bytes.count)
        let fault = nextFault(.pwrite)
        var given = bytes
        if case let .writePrefix(count) = fault { given = UnsafeRawBufferPointer(rebasing: bytes[..<min(count, bytes.count)]) }
        call.bytes = Array(given)
        return try perform(.pwrite, call, fault: fault) {
            let written = try real.pwrite(fd, given, at: offset)
            return written
        }
    }

    public func fsync(_ fd: FileDescriptor) throws {
        try perform(.fsync, Call(kind: .fsync, path: path(fd))) { try real.fsync(fd); return 0 }
    }

    public func fdatasync(_ fd: FileDescriptor) throws {
        try perform(.fdatasync, Call(kind: .fdatasync, path: path(fd))) { try real.fdatasync(fd); return 0 }
    }

    public func fallocate(_ fd: FileDescriptor, mode: Int32, offset: Int, length: Int) throws {
        try perform(.fallocate, Call(kind: .fallocate, path: path(fd), other: "mode \(mode)", offset: offset, length: length)) {
            try real.fallocate(fd, mode: mode, offset: offset, length: length)
            return 0
        }
    }

    public func ftruncate(_ fd: FileDescriptor, size: Int) throws {
        try perform(.ftruncate, Call(kind: .ftruncate, path: path(fd), length: size)) { try real.ftruncate(fd, size: size); return 0 }
    }

    public func fstat(_ fd: FileDescriptor) throws -> stat {
        var info = stat()
        try perform(.fstat, Call(kind: .fstat, path: path(fd))) { info = try real.fstat(fd); return 0 }
        return info
    }

    public func fstatat(_ name: String, in directory: FileDescriptor) throws -> stat {
        var info = stat()
        try perform(.fstatat, Call(kind: .fstatat, path: at(directory, name))) { info = try real.fstatat(name, in: directory); return 0 }
        return info
    }

    public func renameat(_ name: String, in directory: FileDescriptor, to newName: String, in newDirectory: FileDescriptor,
                         flags: UInt32) throws {
        let call = Call(kind: .renameat, path: at(directory, name), other: at(newDirectory, newName), length: Int(flags))
        try perform(.renameat, call) {
            try real.renameat(name, in: directory, to: newName, in: newDirectory, flags: flags)
            return 0
        }
    }

    public func unlinkat(_ name: String, in directory: FileDescriptor, removeDirectory: Bool) throws {
        let call = Call(kind: .unlinkat, path: at(directory, name), other: removeDirectory ? "directory" : nil)
        try perform(.unlinkat, call) { try real.unlinkat(name, in: directory, removeDirectory: removeDirectory); return 0 }
    }

    public func mkdirat(_ name: String, in directory: FileDescriptor, mode: mode_t) throws {
        try perform(.mkdirat, Call(kind: .mkdirat, path: at(directory, name))) { try real.mkdirat(name, in: directory, mode: mode); return 0 }
    }

    public func mknodat(_ name: String, in directory: FileDescriptor, mode: mode_t, device: dev_t) throws {
        try perform(.mknodat, Call(kind: .mknodat, path: at(directory, name))) {
            try real.mknodat(name, in: directory, mode: mode, device: device)
            return 0
        }
    }

    public func symlinkat(_ target: String, _ name: String, in directory: FileDescriptor) throws {
        try perform(.symlinkat, Call(kind: .symlinkat, path: at(directory, name), other: target)) {
            try real.symlinkat(target, name, in: directory)
            return 0
        }
    }

    public func readlinkat(_ name: String, in directory: FileDescriptor) throws -> [UInt8] {
        var target: [UInt8] = []
        try perform(.readlinkat, Call(kind: .readlinkat, path: at(directory, name))) {
            target = try real.readlinkat(name, in: directory)
            return target.count
        }
        return target
    }

    public func linkat(_ fd: FileDescriptor, to name: String, in directory: FileDescriptor) throws {
        try perform(.linkat, Call(kind: .linkat, path: path(fd), other: at(directory, name))) {
            try real.linkat(fd, to: name, in: directory)
            return 0
        }
    }

    public func readdir(_ directory: FileDescriptor) throws -> [DirectoryEntry] {
        var entries: [DirectoryEntry] = []
        try perform(.readdir, Call(kind: .readdir, path: path(directory))) {
            entries = try real.readdir(directory)
            return entries.count
        }
        return entries
    }

    public func getxattr(_ fd: FileDescriptor, name: String, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try perform(.getxattr, Call(kind: .getxattr, path: path(fd), other: name)) { try real.getxattr(fd, name: name, into: buffer) }
    }

    public func setxattr(_ fd: FileDescriptor, name: String, value: UnsafeRawBufferPointer, flags: Int32) throws {
        try perform(.setxattr, Call(kind: .setxattr, path: path(fd), other: name, length: value.count, bytes: Array(value))) {
            try real.setxattr(fd, name: name, value: value, flags: flags)
            return 0
        }
    }

    public func listxattr(_ fd: FileDescriptor, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try perform(.listxattr, Call(kind: .listxattr, path: path(fd))) { try real.listxattr(fd, into: buffer) }
    }

    public func removexattr(_ fd: FileDescriptor, name: String) throws {
        try perform(.removexattr, Call(kind: .removexattr, path: path(fd), other: name)) { try real.removexattr(fd, name: name); return 0 }
    }

    public func syncFileRange(_ fd: FileDescriptor, offset: Int, length: Int) {
        _ = try? perform(.syncFileRange, Call(kind: .syncFileRange, path: path(fd), offset: offset, length: length)) {
            real.syncFileRange(fd, offset: offset, length: length)
            return 0
        }
    }

    public func fadvise(_ fd: FileDescriptor, advice: Int32) {
        _ = try? perform(.fadvise, Call(kind: .fadvise, path: path(fd), length: Int(advice))) { real.fadvise(fd, advice: advice); return 0 }
    }

    public func cachestat(_ fd: FileDescriptor, offset: Int, length: Int) -> (cached: UInt64, dirty: UInt64)? {
        var pages: (cached: UInt64, dirty: UInt64)?
        _ = try? perform(.cachestat, Call(kind: .cachestat, path: path(fd), offset: offset, length: length)) {
            pages = real.cachestat(fd, offset: offset, length: length)
            return Int(pages?.cached ?? 0)
        }
        return pages
    }

    public func fchmod(_ fd: FileDescriptor, mode: mode_t) throws {
        try perform(.fchmod, Call(kind: .fchmod, path: path(fd), length: Int(mode))) { try real.fchmod(fd, mode: mode); return 0 }
    }

    public func fchownat(_ name: String, in directory: FileDescriptor, owner: uid_t, group: gid_t) throws {
        try perform(.fchownat, Call(kind: .fchownat, path: at(directory, name))) {
            try real.fchownat(name, in: directory, owner: owner, group: group)
            return 0
        }
    }

    public func utimensat(_ fd: FileDescriptor, access: timespec, modification: timespec) throws {
        try perform(.utimensat, Call(kind: .utimensat, path: path(fd))) {
            try real.utimensat(fd, access: access, modification: modification)
            return 0
        }
    }

    public func fstatvfs(_ fd: FileDescriptor) throws -> statvfs {
        var info = statvfs()
        try perform(.fstatvfs, Call(kind: .fstatvfs, path: path(fd))) { info = try real.fstatvfs(fd); return 0 }
        return info
    }

    public func syncfs(_ fd: FileDescriptor) throws {
        try perform(.syncfs, Call(kind: .syncfs, path: path(fd))) { try real.syncfs(fd); return 0 }
    }

    public func flock(_ fd: FileDescriptor, operation: Int32) throws {
        try perform(.flock, Call(kind: .flock, path: path(fd), length: Int(operation))) { try real.flock(fd, operation: operation); return 0 }
    }

    public func nameToHandle(_ fd: FileDescriptor) throws -> BackingFileHandle {
        var handle = BackingFileHandle(type: 0, bytes: [])
        try perform(.nameToHandle, Call(kind: .nameToHandle, path: path(fd))) { handle = try real.nameToHandle(fd); return handle.bytes.count }
        return handle
    }

    public func openByHandle(_ handle: BackingFileHandle, mount: FileDescriptor, flags: Int32) throws -> FileDescriptor {
        FileDescriptor(rawValue: Int32(try perform(.openByHandle, Call(kind: .openByHandle, path: path(mount), length: Int(flags))) {
            Int(try real.openByHandle(handle, mount: mount, flags: flags).rawValue)
        }))
    }

    // MARK: Internals

    /// Counts one call of `kind` and returns the fault planned for it, if any.
    private func nextFault(_ kind: Kind) -> Fault? {
        state.withLock { state in
            let number = (state.counts[kind] ?? 0) + 1
            state.counts[kind] = number
            return state.plans.first { $0.kind == kind && ($0.nth == number || ($0.sticky && number > $0.nth)) }?.fault
        }
    }

    @discardableResult
    private func perform(_ kind: Kind, _ call: Call, _ body: () throws -> Int) throws -> Int {
        try perform(kind, call, fault: nextFault(kind), body)
    }

    /// Runs `body` unless `fault` fails the call, and records what happened.
    @discardableResult
    private func perform(_ kind: Kind, _ call: Call, fault: Fault?, _ body: () throws -> Int) throws -> Int {
        var call = call
        defer { state.withLock { $0.calls.append(call) } }
        if case let .pause(seconds) = fault { usleep(UInt32(seconds * 1_000_000)) }
        if case let .fail(errno) = fault {
            let error = SystemError(kind.rawValue, path: call.path, errno: errno)
            call.bytes = nil
            call.result = .failure(error)
            throw error
        }
        do {
            let value = try body()
            call.result = .success(value)
            return value
        } catch let error as SystemError {
            call.result = .failure(error)
            throw error
        }
    }

    private func path(_ fd: FileDescriptor) -> String {
        if fd == .currentDirectory { return currentDirectoryPath() }
        return (try? real.readlinkat(SystemIO.procPath(fd), in: .currentDirectory)).map { String(decoding: $0, as: UTF8.self) }
            ?? "fd \(fd.rawValue)"
    }

    private func at(_ directory: FileDescriptor, _ name: String) -> String {
        if name.hasPrefix("/proc/self/fd/"), let fd = Int32(name.dropFirst("/proc/self/fd/".count)) { return path(FileDescriptor(rawValue: fd)) }
        if name.hasPrefix("/") { return name }
        return name.isEmpty ? path(directory) : path(directory) + "/" + name
    }

    private func currentDirectoryPath() -> String {
        guard let cwd = getcwd(nil, 0) else { return "." }
        defer { free(cwd) }
        return String(cString: cwd)
    }
}
