import EpochFormat
import Glibc

/// Where the two header slots live. The journal writes only through this protocol, so a test
/// double can crash at each step, tear writes, drop unflushed writes and fail fsync.
public protocol HeaderStore: Sendable {
    /// The `HeaderSlot.size` bytes of slot 0 (A) or 1 (B); bytes past the end of a short
    /// store read as zeros (a torn or never-written slot).
    func read(slot: Int) throws -> [UInt8]
    /// Writes a whole slot. Not durable until `sync()` returns.
    func write(slot: Int, bytes: [UInt8]) throws
    /// Makes every write so far durable (fsync).
    func sync() throws
    /// Runs `body` holding a lock that excludes other processes committing to this store.
    func withExclusiveLock<R>(_ body: () throws -> R) throws -> R
}

/// The header file `BACKING/epochfs.header`: slot A at offset 0, slot B at offset 65536,
/// written with pwrite and made durable with fsync.
public final class FileHeaderStore: HeaderStore {
    public static let fileName = "epochfs.header"

    public let path: String
    private let fd: Int32

    /// Opens the header of an existing volume.
    public init(backing: String) throws {
        let path = backing + "/" + Self.fileName
        let fd = retryingEINTR { open(path, O_RDWR | O_CLOEXEC) }
        guard fd >= 0 else { throw SystemError("open", path: path) }
        self.path = path
        self.fd = fd
    }

    /// Creates the header file of a new volume; fails if one exists. The caller writes slot A,
    /// then `sync()`s, which also makes the new file's directory entry durable.
    public init(creatingIn backing: String) throws {
        let path = backing + "/" + Self.fileName
        let fd = retryingEINTR { open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
        guard fd >= 0 else { throw SystemError("create", path: path) }
        self.path = path
        self.fd = fd
        guard ftruncate(fd, off_t(2 * HeaderSlot.size)) == 0 else { throw SystemError("ftruncate", path: path) }
        try syncDirectory(backing)
    }

    deinit { close(fd) }

    public func read(slot: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: HeaderSlot.size)
        var filled = 0
        try bytes.withUnsafeMutableBytes { buffer in
            while filled < buffer.count {
                let n = retryingEINTR { pread(fd, buffer.baseAddress! + filled, buffer.count - filled, offset(slot) + off_t(filled)) }
                guard n >= 0 else { throw SystemError("read", path: path) }
                if n == 0 { break }
                filled += n
            }
        }
        return bytes
    }

    public func write(slot: Int, bytes: [UInt8]) throws {
        precondition(bytes.count == HeaderSlot.size)
        var written = 0
        try bytes.withUnsafeBytes { buffer in
            while written < buffer.count {
                let n = retryingEINTR { pwrite(fd, buffer.baseAddress! + written, buffer.count - written, offset(slot) + off_t(written)) }
                guard n > 0 else { throw SystemError("write", path: path) }
                written += n
            }
        }
    }

    public func sync() throws {
        guard retryingEINTR({ fsync(fd) }) == 0 else { throw SystemError("fsync", path: path) }
    }

    public func withExclusiveLock<R>(_ body: () throws -> R) throws -> R {
        guard retryingEINTR({ flock(fd, LOCK_EX) }) == 0 else { throw SystemError("flock", path: path) }
        defer { flock(fd, LOCK_UN) }
        return try body()
    }

    private func offset(_ slot: Int) -> off_t {
        precondition(slot == 0 || slot == 1)
        return off_t(slot * HeaderSlot.size)
    }
}

func syncDirectory(_ path: String) throws {
    let fd = retryingEINTR { open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
    guard fd >= 0 else { throw SystemError("open", path: path) }
    defer { close(fd) }
    guard retryingEINTR({ fsync(fd) }) == 0 else { throw SystemError("fsync", path: path) }
}
