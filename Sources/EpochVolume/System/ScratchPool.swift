import Synchronization

/// Reused buffers for the read and write paths. A fresh 1 MiB array per request cost page
/// faults and zero-filling that topped the profile of a sequential read.
final class ScratchPool: Sendable {
    static let shared = ScratchPool()
    private static let minimumSize = (1 << 20) + (64 << 10)
    private static let keep = 32

    private struct Buffer: @unchecked Sendable {
        let memory: UnsafeMutableRawBufferPointer
    }

    private let free = Mutex<[Buffer]>([])

    /// Lends a buffer of at least `size` bytes (uninitialised) for the duration of `body`.
    func with<R>(size: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        let buffer = free.withLock { pool in pool.firstIndex { $0.memory.count >= size }.map { pool.remove(at: $0) } }
            ?? Buffer(memory: .allocate(byteCount: max(size, Self.minimumSize), alignment: 64))
        defer {
            let kept = free.withLock { pool in
                guard pool.count < Self.keep else { return false }
                pool.append(buffer)
                return true
            }
            if !kept { buffer.memory.deallocate() }
        }
        return try body(UnsafeMutableRawBufferPointer(rebasing: buffer.memory[0..<size]))
    }
}
