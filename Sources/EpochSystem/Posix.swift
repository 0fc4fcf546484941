import EpochCrypto
import EpochIO
import Glibc

package func currentDirectory() -> String {
    guard let cwd = getcwd(nil, 0) else { return "." }
    defer { free(cwd) }
    return String(cString: cwd)
}

/// Reads a whole file of at most `limit` bytes straight into `SecretBytes`, so key material
/// never passes through an ordinary array. (Key files live outside the backing directory, so
/// these reads do not go through `BackingIO`.)
package func readSecretFile(_ path: String, limit: Int = 4096) throws -> SecretBytes {
    let fd = retryingEINTR { open(path, O_RDONLY | O_CLOEXEC) }
    guard fd >= 0 else { throw SystemError("open", path: path) }
    defer { close(fd) }
    return try readSecret(from: fd, limit: limit, what: path)
}

/// Reads everything from `fd` until EOF, failing if there is more than `limit` bytes.
package func readSecret(from fd: Int32, limit: Int, what: String) throws -> SecretBytes {
    var filled = 0
    let scratch = try SecretBytes(count: limit + 1) { buffer in
        while filled < buffer.count {
            let n = retryingEINTR { read(fd, buffer.baseAddress! + filled, buffer.count - filled) }
            guard n >= 0 else { throw SystemError("read", path: what) }
            if n == 0 { break }
            filled += n
        }
    }
    guard filled <= limit else { throw SystemError("read", path: what, errno: EFBIG) }
    return scratch.withUnsafeBytes { SecretBytes(copying: UnsafeRawBufferPointer(rebasing: $0[..<filled])) }
}
