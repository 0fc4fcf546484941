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

    /// Writes a fresh IV into a new directory.
    @discardableResult
    public static func create(in directory: FileDescriptor, io: any BackingIO) throws -> [UInt8] {
        let iv = try SecureRandom.bytes(size)
        try restore(iv, in: directory, io: io)
        return iv
    }

    /// Writes `iv` as the directory's IV (a new one, or the old one back after a failed rmdir).
    public static func restore(_ iv: [UInt8], in directory: FileDescriptor, io: any BackingIO) throws {
        try io.withOpened(fileName, in: directory, flags: O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode: 0o440) {
            try io.pwriteFully($0, iv, at: 0)
        }
    }
}
