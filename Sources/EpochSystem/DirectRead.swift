import CLinux
import EpochIO
import Glibc

/// Reads of a backing file that bypass the page cache (O_DIRECT), through a second descriptor
/// opened for the one read, for ranges none of which is cached: a file read once through the
/// mount then is not cached twice, as ciphertext and as plaintext. (Had the range dirty pages,
/// the kernel would write them out first, so a direct read would still see every write.)
package enum DirectRead {
    /// Offsets, lengths and buffer addresses are multiples of this: the page size, which covers
    /// the logical block size of the disks Linux supports.
    private static let alignment = 4096

    /// Calls `body` with the `count` bytes at `offset` of the file open at `fd`. Returns nil
    /// without calling it where a read through the page cache is the better one or the only
    /// one: part of the range is cached, the kernel cannot tell (before Linux 6.5), or the
    /// backing file system (or the file's mode) allows no direct read.
    package static func with<R>(io: any BackingIO, fd: FileDescriptor, offset: Int, count: Int,
                        _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R? {
        // With O_NOATIME if `fd` has it (a noatime mount's reads): a flag of our own descriptor.
        guard let pages = io.cachestat(fd, offset: offset, length: count), pages.cached == 0,
              let direct = try? io.open(SystemIO.procPath(fd), in: .currentDirectory,
                                        flags: O_RDONLY | epochfs_O_DIRECT | O_CLOEXEC | (fcntl(fd.rawValue, F_GETFL) & epochfs_O_NOATIME),
                                        mode: 0) else {
            return nil
        }
        defer { io.close(direct) }
        let alignedStart = offset & ~(alignment - 1)
        let alignedEnd = (offset + count + alignment - 1) & ~(alignment - 1)
        let needed = offset + count - alignedStart
        return try ScratchPool.shared.with(size: alignedEnd - alignedStart) { buffer -> R? in
            let filled: Int
            do {
                filled = try io.preadFully(direct, into: buffer, at: alignedStart)
            } catch let error as SystemError where error.errno == EINVAL {
                return nil // an alignment this file system does not take
            }
            guard filled >= needed else { throw SystemError("read", path: "backing file changed size while read", errno: EIO) }
            return try body(UnsafeRawBufferPointer(rebasing: buffer[(offset - alignedStart)..<(offset - alignedStart + count)]))
        }
    }
}
