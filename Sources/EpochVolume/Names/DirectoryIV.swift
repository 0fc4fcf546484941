import EpochCrypto
import Glibc

/// The per-directory IV (docs/FORMAT.md §5): 16 random bytes in `epochfs.diriv` inside each
/// backing directory, the associated data of every name in it.
public enum DirectoryIV {
    public static let fileName = "epochfs.diriv"
    public static let size = 16

    /// Reads the IV of the directory open at `directoryFD`.
    public static func read(directoryFD: Int32) throws -> [UInt8] {
        let fd = retryingEINTR { openat(directoryFD, fileName, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) }
        guard fd >= 0 else { throw SystemError("open", path: fileName) }
        defer { close(fd) }
        let iv = try preadFully(fd, count: size + 1, at: 0)
        guard iv.count == size else { throw SystemError("read", path: fileName, errno: EIO) }
        return iv
    }

    /// Writes a fresh IV into a new directory.
    @discardableResult
    public static func create(directoryFD: Int32) throws -> [UInt8] {
        let iv = try SecureRandom.bytes(size)
        try restore(iv, directoryFD: directoryFD)
        return iv
    }

    /// Writes `iv` as the directory's IV (a new one, or the old one back after a failed rmdir).
    public static func restore(_ iv: [UInt8], directoryFD: Int32) throws {
        let fd = retryingEINTR { openat(directoryFD, fileName, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o440) }
        guard fd >= 0 else { throw SystemError("create", path: fileName) }
        defer { close(fd) }
        try iv.withUnsafeBytes { try pwriteFully(fd, $0, at: 0) }
    }
}
