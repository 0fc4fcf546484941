import Glibc

/// Small whole-file reads and writes of epochfs's own side files.
public enum BackingFile {
    /// Everything in the file open at `fd`, failing (EFBIG) past `limit` bytes.
    public static func readAll(fd: Int32, limit: Int) throws -> [UInt8] {
        let bytes = try preadFully(fd, count: limit + 1, at: 0)
        guard bytes.count <= limit else { throw SystemError("read", path: "side file", errno: EFBIG) }
        return bytes
    }

    /// Creates (or replaces) `name` under `directoryFD` holding `bytes`, mode 0400.
    public static func create(at directoryFD: Int32, _ name: String, bytes: [UInt8]) throws {
        let fd = retryingEINTR { openat(directoryFD, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o400) }
        guard fd >= 0 else { throw SystemError("create", path: name) }
        defer { close(fd) }
        try bytes.withUnsafeBytes { try pwriteFully(fd, $0, at: 0) }
    }
}
