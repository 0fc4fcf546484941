import CLinux
import Glibc

/// Reads of a backing file that bypass the page cache (O_DIRECT), through a second descriptor
/// opened for the one read, for ranges none of which is cached: a file read once through the
/// mount then is not cached twice, as ciphertext and as plaintext. (Had the range dirty pages,
/// the kernel would write them out first, so a direct read would still see every write.)
enum DirectRead {
    /// Offsets, lengths and buffer addresses are multiples of this: the page size, which covers
    /// the logical block size of the disks Linux supports.
    private static let alignment = 4096

    /// Calls `body` with the `count` bytes at `offset` of the file open at `fd`. Returns nil
    /// without calling it where a read through the page cache is the better one or the only
    /// one: part of the range is cached, the kernel cannot tell (before Linux 6.5), or the
    /// backing file system (or the file's mode) allows no direct read.
    static func with<R>(fd: Int32, offset: Int, count: Int, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R? {
        var cached: UInt64 = 0, dirty: UInt64 = 0
        guard epochfs_page_cache_pages(fd, UInt64(offset), UInt64(count), &cached, &dirty) == 0, cached == 0 else { return nil }
        let direct = retryingEINTR { open("/proc/self/fd/\(fd)", O_RDONLY | epochfs_O_DIRECT | O_CLOEXEC) }
        guard direct >= 0 else { return nil }
        defer { close(direct) }
        let alignedStart = offset & ~(alignment - 1)
        let alignedEnd = (offset + count + alignment - 1) & ~(alignment - 1)
        let needed = offset + count - alignedStart
        return try ScratchPool.shared.with(size: alignedEnd - alignedStart) { buffer -> R? in
            var filled = 0
            while filled < needed {
                let n = retryingEINTR { pread(direct, buffer.baseAddress! + filled, buffer.count - filled, off_t(alignedStart + filled)) }
                if n < 0, errno == EINVAL, filled == 0 { return nil } // an alignment this file system does not take
                guard n >= 0 else { throw SystemError("read", path: "backing file") }
                if n == 0 { break }
                filled += n
            }
            guard filled >= needed else { throw SystemError("read", path: "backing file changed size while read", errno: EIO) }
            return try body(UnsafeRawBufferPointer(rebasing: buffer[(offset - alignedStart)..<(offset - alignedStart + count)]))
        }
    }
}
