import Glibc

/// One segment opened for sequential reading through a bounded buffer filled by `pread`.
/// The buffer holds `chunkSize` bytes, or one record when a record is larger, so memory does
/// not grow with the segment.
final class SegmentFile {
    let name: String
    let path: String
    let size: Int64
    private let descriptor: Int32
    private let chunkSize: Int
    private var buffer: UnsafeMutableRawBufferPointer
    private var bufferOffset: Int64 = 0 // file offset of buffer[0]
    private var bufferCount = 0

    init(directory: String, name: String, chunkSize: Int) throws(WALError) {
        self.name = name
        path = directory + "/" + name
        self.chunkSize = chunkSize
        descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw .io(path: path, operation: "open", errno: errno) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            let code = errno
            close(descriptor)
            throw .io(path: path, operation: "fstat", errno: code)
        }
        size = Int64(status.st_size)
        buffer = .allocate(byteCount: chunkSize, alignment: 64)
        posix_fadvise(descriptor, 0, 0, POSIX_FADV_SEQUENTIAL)
    }

    deinit {
        buffer.deallocate()
        close(descriptor)
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
        while bufferCount < wanted {
            let read = pread(descriptor, buffer.baseAddress! + bufferCount, wanted - bufferCount,
                             off_t(offset) + off_t(bufferCount))
            if read < 0 {
                if errno == EINTR { continue }
                throw .io(path: path, operation: "pread", errno: errno)
            }
            if read == 0 { break }
            bufferCount += read
        }
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
