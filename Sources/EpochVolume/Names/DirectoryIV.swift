import EpochCrypto
import EpochIO
import Glibc

/// The per-directory IV (docs/FORMAT.md §5.1): 16 random bytes in `epochfs.diriv` inside each
/// backing directory, the associated data of every name in it.
public enum DirectoryIV {
    public static let fileName = "epochfs.diriv"
    public static let size = 16

    /// Reads the IV of the directory open at `directory`.
    public static func read(in directory: FileDescriptor, io: any BackingIO) throws -> [UInt8] {
        let iv = try io.readFile(fileName, in: directory, limit: size + 1)
        guard iv.count == size else { throw SystemError("read", path: fileName, errno: EIO) }
        return iv
    }

    /// Writes `iv` (a fresh one, or the old one back after a failed rmdir) into a new IV file
    /// of `directory`, and returns that file still open, for the caller to make durable.
    public static func write(_ iv: [UInt8], in directory: FileDescriptor, io: any BackingIO) throws -> FileDescriptor {
        let fd = try io.open(fileName, in: directory, flags: O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode: 0o440)
        do {
            try io.pwriteFully(fd, iv, at: 0)
        } catch {
            io.close(fd)
            throw error
        }
        return fd
    }

    /// Gives the directory open (for reading) at `directory`, whose IV is missing or not 16
    /// bytes, a fresh one, durably, provided no name in it depends on the IV: it holds nothing
    /// but epochfs's own files. Returns false, writing nothing, when it holds entries.
    public static func recreateIfUnused(in directory: FileDescriptor, io: any BackingIO) throws -> Bool {
        guard try io.readdir(directory).allSatisfy({ NameCodec.isInternal($0.name) }) else { return false }
        do {
            try io.unlinkat(fileName, in: directory, removeDirectory: false)
        } catch let error as SystemError where error.errno == ENOENT {}
        try createDurably(in: directory, io: io)
        return true
    }

    /// Writes a fresh IV into `directory` (open for reading) and makes it durable at once, with
    /// its directory entry: for `init` and a root found without one.
    public static func createDurably(in directory: FileDescriptor, io: any BackingIO) throws {
        let fd = try write(try SecureRandom.bytes(size), in: directory, io: io)
        defer { io.close(fd) }
        try io.fsync(fd)
        try io.fsync(directory)
    }
}
