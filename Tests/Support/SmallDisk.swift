import Foundation
import Glibc

/// A tmpfs of a few MiB mounted on a fresh directory (root only): a backing disk that fills
/// up. Unmounted when the value goes away.
public final class SmallDisk: Sendable {
    public let path: String
    private let holder = TemporaryDirectory()

    public init(megabytes: Int) throws {
        path = holder.path + "/disk"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let result = try run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(megabytes)m,mode=0755", "tmpfs", path])
        guard result.status == 0 else { throw TestFailure("mount tmpfs: \(result.stderr)") }
    }

    deinit { _ = try? run("/bin/umount", ["-l", path]) }

    /// Fills the disk with a file `name` until the file system says ENOSPC; returns the bytes written.
    @discardableResult
    public func fill(_ name: String = "filler") -> Int {
        let fd = open(path + "/" + name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0xAB, count: 4096)
        var total = 0
        while true {
            let written = write(fd, chunk, chunk.count)
            if written <= 0 { break }
            total += written
        }
        // Whatever smaller pieces still fit, so that not even one byte is left.
        while write(fd, chunk, 1) == 1 { total += 1 }
        return total
    }

    /// Frees `bytes` of the filler file again.
    public func makeRoom(_ bytes: Int, in name: String = "filler") {
        var info = stat()
        guard stat(path + "/" + name, &info) == 0 else { return }
        truncate(path + "/" + name, max(0, info.st_size - off_t(bytes)))
    }
}
