import EpochIO
import Glibc

/// One segment opened for sequential reading through a bounded buffer filled by `pread`.
/// The buffer holds `chunkSize` bytes, or one record when a record is larger, so memory does
/// not grow with the segment.
final class SegmentFile {
    let name: String
    let path: String
    let size: Int64
    private let io: any BackingIO
    private let descriptor: FileDescriptor
    private let chunkSize: Int
    private var buffer: UnsafeMutableRawBufferPointer
    private var bufferOffset: Int64 = 0 // file offset of buffer[0]
    private var bufferCount = 0

    init(directory: String, name: String, chunkSize: Int, io: any BackingIO) throws(WALError) {
        self.name = name
        let path = directory + "/" + name
        self.path = path
        self.chunkSize = chunkSize
        self.io = io
        let descriptor = try walIO(path) { try io.open(path, in: .currentDirectory, flags: O_RDONLY | O_CLOEXEC, mode: 0) }
        do throws(WALError) {
            size = Int64(try walIO(path) { try io.size(descriptor) })
        } catch {
            io.close(descriptor)
            throw error
        }
        self.descriptor = descriptor
        buffer = .allocate(byteCount: chunkSize, alignment: 64)
        io.fadvise(descriptor, advice: POSIX_FADV_SEQUENTIAL)
    }

    deinit {
        buffer.deallocate()
        io.close(descriptor)
    }

    /// The `count` bytes at `offset`, or nil when the file ends first. The bytes stay valid
    /// until the next call.
    func bytes(at offset: Int64, count: Int) throws(WALError) -> UnsafeRawBufferPointer? {
        guard offset + Int64(count) <= size else { return nil }
        if offset < bufferOffset || offset + Int64(count) > bufferOffset + Int64(bufferCount) {
            guard try refill(from: offset, count: count) else { return nil }
        }
        let start = Int(offset - bufferOffset)
        return UnsafeRawBufferPointer(rebasing: buffer[start..<start + count])
    }

    /// Makes the buffer start at `offset`, keeping bytes already read, and fills it up to
    /// its capacity or the end of the file. False when the file is shorter than `fstat` said.
    private func refill(from offset: Int64, count: Int) throws(WALError) -> Bool {
        let inBuffer = offset >= bufferOffset && offset < bufferOffset + Int64(bufferCount)
        var kept = inBuffer ? bufferCount - Int(offset - bufferOffset) : 0
        let keptStart = bufferCount - kept
        let capacity = max(count, chunkSize)
        if capacity != buffer.count {
            // Grow for a record larger than a chunk; shrink back once past it.
            let replacement = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)
            kept = min(kept, capacity)
            replacement.copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[keptStart..<keptStart + kept]))
            buffer.deallocate()
            buffer = replacement
        } else if kept > 0 {
            memmove(buffer.baseAddress!, buffer.baseAddress! + keptStart, kept)
        }
        bufferOffset = offset
        bufferCount = kept
        let wanted = Int(min(Int64(capacity), size - offset))
        let unfilled = UnsafeMutableRawBufferPointer(rebasing: buffer[bufferCount..<wanted])
        bufferCount += try walIO(path) { try io.preadFully(descriptor, into: unfilled, at: Int(offset) + bufferCount) }
        return bufferCount >= count
    }
}

/// A reusable output buffer for opened payloads; grows to the largest entry, never per entry.
final class ScratchBuffer {
    private var storage = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)

    deinit { storage.deallocate() }

    func reserve(_ count: Int) -> UnsafeMutableRawBufferPointer {
        if count > storage.count {
            storage.deallocate()
            storage = .allocate(byteCount: max(count, storage.count * 2), alignment: 16)
        }
        return UnsafeMutableRawBufferPointer(rebasing: storage[0..<count])
    }
}
