import CFuse3
import CURing
import Glibc

/// One request slot of a FUSE ring queue: the header and payload buffers the kernel fills with
/// a request and reads the reply from, and the contiguous copy of the request libfuse is handed
/// (`fuse_session_process_buf` takes what a read of /dev/fuse would have returned).
/// Touched by its queue's thread, and while a worker serves its request by that worker alone
/// (handed over and back under locks, `RingQueue`).
final class RingEntry: @unchecked Sendable {
    static let headerSize = MemoryLayout<epochfs_fuse_uring_req_header>.size
    private static let inHeaderSize = MemoryLayout<fuse_in_header>.size
    private static let outHeaderSize = MemoryLayout<fuse_out_header>.size
    private static let opAreaOffset = MemoryLayout<epochfs_fuse_uring_req_header>.offset(of: \.op_in)!
    private static let ringInOutOffset = MemoryLayout<epochfs_fuse_uring_req_header>.offset(of: \.ring_ent_in_out)!
    private static let opAreaSize = ringInOutOffset - opAreaOffset

    let index: Int
    /// iovec[0]: the header buffer, iovec[1]: the payload buffer; given to the kernel at REGISTER.
    let buffers: UnsafeMutablePointer<iovec>
    private let header: UnsafeMutableRawPointer
    private let payload: UnsafeMutableRawPointer
    private let payloadCapacity: Int
    private let request: UnsafeMutableRawPointer
    /// The request being served and whether libfuse has replied to it.
    private var unique: UInt64 = 0
    private(set) var replied = false

    init(index: Int, payloadCapacity: Int) {
        self.index = index
        self.payloadCapacity = payloadCapacity
        header = .allocate(byteCount: Self.headerSize, alignment: 64)
        header.initializeMemory(as: UInt8.self, repeating: 0, count: Self.headerSize)
        payload = .allocate(byteCount: payloadCapacity, alignment: 4096)
        request = .allocate(byteCount: Self.inHeaderSize + Self.opAreaSize + payloadCapacity, alignment: 4096)
        buffers = .allocate(capacity: 2)
        buffers[0] = iovec(iov_base: header, iov_len: Self.headerSize)
        buffers[1] = iovec(iov_base: payload, iov_len: payloadCapacity)
    }

    deinit {
        header.deallocate()
        payload.deallocate()
        request.deallocate()
        buffers.deallocate()
    }

    /// Whether the request in the entry may wait long: an fsync, or anything on a control file.
    var mayWaitLong: Bool {
        let inHeader = header.load(as: fuse_in_header.self)
        return inHeader.opcode == FUSE_FSYNC.rawValue || inHeader.opcode == FUSE_FSYNCDIR.rawValue
            || ControlFiles.owns(inHeader.nodeid)
    }

    /// The id the kernel wants back with the reply.
    var commitID: UInt64 {
        header.load(fromByteOffset: Self.ringInOutOffset, as: epochfs_fuse_uring_ent_in_out.self).commit_id
    }

    /// Lays the request the kernel put in this entry out as /dev/fuse would deliver it: the
    /// in-header, the per-opcode struct, the payload. Nil when its sizes do not add up.
    func takeRequest() -> fuse_buf? {
        let inHeader = header.load(as: fuse_in_header.self)
        let payloadSize = Int(header.load(fromByteOffset: Self.ringInOutOffset, as: epochfs_fuse_uring_ent_in_out.self).payload_sz)
        // The kernel's length counts every argument; the per-opcode struct is what the payload is not.
        let opSize = Int(inHeader.len) - Self.inHeaderSize - payloadSize
        unique = inHeader.unique
        replied = false
        guard (0...Self.opAreaSize).contains(opSize), payloadSize <= payloadCapacity else { return nil }
        request.copyMemory(from: header, byteCount: Self.inHeaderSize)
        (request + Self.inHeaderSize).copyMemory(from: header + Self.opAreaOffset, byteCount: opSize)
        (request + Self.inHeaderSize + opSize).copyMemory(from: payload, byteCount: payloadSize)
        return fuse_buf(size: Self.inHeaderSize + opSize + payloadSize, flags: fuse_buf_flags(rawValue: 0),
                        mem: request, fd: -1, pos: 0)
    }

    /// Takes libfuse's reply (`vectors[0]` the out-header, the rest its payload) into the ring
    /// buffers if it answers this entry's request; the bytes taken, or nil when it is not ours.
    func takeReply(_ vectors: UnsafePointer<iovec>, _ count: Int) -> Int? {
        guard !replied, count >= 1, vectors[0].iov_len >= Self.outHeaderSize else { return nil }
        var outHeader = vectors[0].iov_base.loadUnaligned(as: fuse_out_header.self)
        guard outHeader.unique == unique else { return nil }
        var length = 0
        for vector in UnsafeBufferPointer(start: vectors + 1, count: count - 1) {
            guard length + vector.iov_len <= payloadCapacity else {
                outHeader.error = -EIO // larger than the kernel can take: cannot happen with its own limits
                length = 0
                break
            }
            (payload + length).copyMemory(from: vector.iov_base, byteCount: vector.iov_len)
            length += vector.iov_len
        }
        outHeader.len = UInt32(Self.outHeaderSize + length)
        commit(outHeader, payloadSize: length)
        return Self.outHeaderSize + length
    }

    /// Answers the request with `errno` (a request libfuse could not be handed, or left unanswered).
    func fail(_ errno: Int32) {
        commit(fuse_out_header(len: UInt32(Self.outHeaderSize), error: -errno, unique: unique), payloadSize: 0)
    }

    private func commit(_ outHeader: fuse_out_header, payloadSize: Int) {
        header.storeBytes(of: outHeader, as: fuse_out_header.self)
        let payloadSizeOffset = Self.ringInOutOffset + MemoryLayout<epochfs_fuse_uring_ent_in_out>.offset(of: \.payload_sz)!
        header.storeBytes(of: UInt32(payloadSize), toByteOffset: payloadSizeOffset, as: UInt32.self)
        replied = true
    }
}
