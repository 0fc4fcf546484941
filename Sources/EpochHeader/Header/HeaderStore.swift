import EpochFormat
import EpochIO
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
/// written with pwrite and made durable with fsync. Between commits it is held open read-only,
/// so that a mount keeps no file of the backing dir open for writing (and its file system can
/// be remounted read-only under it).
public final class FileHeaderStore: HeaderStore {
    public static let fileName = "epochfs.header"

    public let path: String
    private let io: any BackingIO
    private let fd: FileDescriptor

    /// Opens the header of an existing volume. A header whose slots are not both allocated
    /// yet (made before epochfs allocated them at init) gets them now, while there is room.
    public init(backing: String, io: any BackingIO = SystemIO()) throws {
        path = backing + "/" + Self.fileName
        self.io = io
        do {
            fd = try io.open(path, in: .currentDirectory, flags: O_RDONLY | O_CLOEXEC, mode: 0)
        } catch let error as SystemError where error.errno == ENOENT {
            throw NotAVolume(backing: backing, header: path)
        }
        if let info = try? io.fstat(fd), Int(info.st_blocks) * 512 < 2 * HeaderSlot.size {
            // Best effort: without it a commit still works wherever the disk has room.
            try? allocateSlots()
        }
    }

    /// Creates the header file of a new volume; fails if one exists. Both slots get their
    /// disk space now, so that no later commit (a rekey on a full disk) needs new space. The
    /// caller writes slot A, then `sync()`s, which also makes the new file's directory entry
    /// durable.
    public init(creatingIn backing: String, io: any BackingIO = SystemIO()) throws {
        path = backing + "/" + Self.fileName
        self.io = io
        try io.withOpened(path, in: .currentDirectory, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600) { _ in }
        fd = try io.open(path, in: .currentDirectory, flags: O_RDONLY | O_CLOEXEC, mode: 0)
        try allocateSlots()
        try io.withOpened(backing, in: .currentDirectory, flags: O_RDONLY | O_DIRECTORY) { try io.fsync($0) }
    }

    /// Gives both slots their blocks: fallocate, or where the file system has none, zeros
    /// written into each slot that holds only zeros (a never-written slot reads as zeros).
    private func allocateSlots() throws {
        do {
            try withWritable { try io.fallocate($0, mode: 0, offset: 0, length: 2 * HeaderSlot.size) }
        } catch let error as SystemError where error.errno == EOPNOTSUPP {
            let zeros = [UInt8](repeating: 0, count: HeaderSlot.size)
            for slot in 0..<2 where try read(slot: slot) == zeros { try write(slot: slot, bytes: zeros) }
        }
        try sync()
    }

    deinit { io.close(fd) }

    public func read(slot: Int) throws -> [UInt8] {
        var bytes = try io.preadFully(fd, count: HeaderSlot.size, at: offset(slot))
        bytes += [UInt8](repeating: 0, count: HeaderSlot.size - bytes.count)
        return bytes
    }

    public func write(slot: Int, bytes: [UInt8]) throws {
        precondition(bytes.count == HeaderSlot.size)
        try withWritable { try io.pwriteFully($0, bytes, at: offset(slot)) }
    }

    /// fsync through the read-only descriptor: it makes the file's data durable all the same.
    public func sync() throws { try io.fsync(fd) }

    /// Runs `body` with the header opened for writing, for the one call that needs it.
    private func withWritable(_ body: (FileDescriptor) throws -> Void) throws {
        try io.withOpened(path, in: .currentDirectory, flags: O_WRONLY, body)
    }

    public func withExclusiveLock<R>(_ body: () throws -> R) throws -> R {
        try io.flock(fd, operation: LOCK_EX)
        defer { try? io.flock(fd, operation: LOCK_UN) }
        return try body()
    }

    private func offset(_ slot: Int) -> Int {
        precondition(slot == 0 || slot == 1)
        return slot * HeaderSlot.size
    }
}

/// A directory without a header: not a volume (or not one yet).
public struct NotAVolume: Error, CustomStringConvertible {
    public let backing: String
    public let header: String

    public var description: String { "\(backing) is not an epochfs volume (no \(header))" }
}
