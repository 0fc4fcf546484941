import Glibc
import Synchronization

/// Reused buffers for the read and write paths. A fresh 1 MiB array per request cost page
/// faults and zero-filling that topped the profile of a sequential read. Each buffer is one
/// 2 MiB transparent huge page where the kernel allows it, so that the kernel pins one page,
/// not 256, when it copies a 1 MiB reply out of it.
package final class ScratchPool: Sendable {
    package static let shared = ScratchPool()
    private static let hugePageSize = 2 << 20
    private static let keep = 16

    private struct Buffer: @unchecked Sendable {
        let memory: UnsafeMutableRawBufferPointer
    }

    private let free = Mutex<[Buffer]>([])

    /// Lends a buffer of at least `size` bytes (uninitialised) for the duration of `body`.
    package func with<R>(size: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        let buffer = free.withLock { pool in pool.firstIndex { $0.memory.count >= size }.map { pool.remove(at: $0) } }
            ?? Self.allocate(atLeast: size)
        defer {
            let kept = free.withLock { pool in
                guard pool.count < Self.keep else { return false }
                pool.append(buffer)
                return true
            }
            if !kept { Glibc.free(buffer.memory.baseAddress) }
        }
        return try body(UnsafeMutableRawBufferPointer(rebasing: buffer.memory[0..<size]))
    }

    private static func allocate(atLeast size: Int) -> Buffer {
        let length = (size + hugePageSize - 1) / hugePageSize * hugePageSize
        var memory: UnsafeMutableRawPointer?
        guard posix_memalign(&memory, hugePageSize, length) == 0, let memory else { fatalError("out of memory for a \(length)-byte buffer") }
        madvise(memory, length, MADV_HUGEPAGE) // only a hint: without it the buffer works the same
        return Buffer(memory: UnsafeMutableRawBufferPointer(start: memory, count: length))
    }
}
