import CFuse3
import CURing
import Glibc
import Synchronization

/// The session's reads and writes on /dev/fuse (`fuse_session_custom_io`), and where replies go.
/// A reply to a request the io_uring transport handed over goes back into its ring entry.
/// The INIT request's id and the flags the kernel offers are noted, and the reply to it gets
/// what libfuse 3.14 leaves out: FUSE_PARALLEL_DIROPS and FUSE_HANDLE_KILLPRIV, which it
/// accepts in `want` (`Operations.negotiate`) but does not send, and FUSE_OVER_IO_URING when
/// the kernel offers it and the transport is ready.
enum DeviceIO {
    /// The ring transport the INIT reply may announce; set before the session's loop starts.
    static let ring = Mutex<RingTransport?>(nil)
    private static let request = Atomic<UInt64>(0)
    private static let offered = Atomic<UInt32>(0)
    private static let offered2 = Atomic<UInt32>(0)
    private static let added = UInt32(FUSE_PARALLEL_DIROPS | FUSE_HANDLE_KILLPRIV)

    static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ length: Int) -> Int {
        let count = Glibc.read(fd, buffer, length)
        let flagsOffset = MemoryLayout<fuse_in_header>.size + MemoryLayout<fuse_init_in>.offset(of: \.flags)!
        let flags2Offset = MemoryLayout<fuse_in_header>.size + MemoryLayout<fuse_init_in>.offset(of: \.flags2)!
        if let buffer, count >= flagsOffset + 4 {
            let header = buffer.loadUnaligned(as: fuse_in_header.self)
            if header.opcode == FUSE_INIT.rawValue {
                offered.store(buffer.loadUnaligned(fromByteOffset: flagsOffset, as: UInt32.self), ordering: .relaxed)
                let flags2 = count >= flags2Offset + 4 ? buffer.loadUnaligned(fromByteOffset: flags2Offset, as: UInt32.self) : 0
                offered2.store(flags2, ordering: .relaxed)
                request.store(header.unique, ordering: .releasing)
            }
        }
        return count
    }

    static func writev(_ fd: Int32, _ vectors: UnsafeMutablePointer<iovec>?, _ count: Int32) -> Int {
        if let vectors, let taken = RingTransport.takeReply(vectors, Int(count)) { return taken }
        let awaited = request.load(ordering: .acquiring)
        let flags2Offset = MemoryLayout<fuse_init_out>.offset(of: \.flags2)!
        guard awaited != 0, let vectors, count >= 2, vectors[0].iov_len >= MemoryLayout<fuse_out_header>.size,
              vectors[1].iov_len >= flags2Offset + 4 else { return Glibc.writev(fd, vectors, count) }
        let header = vectors[0].iov_base.loadUnaligned(as: fuse_out_header.self)
        guard header.unique == awaited, header.error == 0 else { return Glibc.writev(fd, vectors, count) }
        request.store(0, ordering: .relaxed)
        return replyToInit(fd, vectors, count)
    }

    private static func replyToInit(_ fd: Int32, _ vectors: UnsafeMutablePointer<iovec>, _ count: Int32) -> Int {
        let reply = vectors[1].iov_base!
        let flagsOffset = MemoryLayout<fuse_init_out>.offset(of: \.flags)!
        let flags2Offset = MemoryLayout<fuse_init_out>.offset(of: \.flags2)!
        var flags = reply.loadUnaligned(fromByteOffset: flagsOffset, as: UInt32.self) | (added & offered.load(ordering: .relaxed))
        let transport = ring.withLock { $0 }
        let announcing = transport != nil && offered2.load(ordering: .relaxed) & EPOCHFS_FUSE_OVER_IO_URING_FLAGS2 != 0
        if let transport, announcing {
            let out = reply.loadUnaligned(as: fuse_init_out.self)
            transport.prepare(maxWrite: Int(out.max_write), maxPages: Int(out.max_pages))
            // flags2 counts only with FUSE_INIT_EXT set in flags.
            flags |= UInt32(FUSE_INIT_EXT)
            let flags2 = reply.loadUnaligned(fromByteOffset: flags2Offset, as: UInt32.self) | EPOCHFS_FUSE_OVER_IO_URING_FLAGS2
            reply.storeBytes(of: flags2, toByteOffset: flags2Offset, as: UInt32.self)
        }
        reply.storeBytes(of: flags, toByteOffset: flagsOffset, as: UInt32.self)
        let written = Glibc.writev(fd, vectors, count)
        let failure = errno
        if let transport {
            if announcing && written >= 0 {
                transport.register()
            } else {
                transport.declined(announcing ? "INIT reply failed: \(String(cString: strerror(failure)))"
                                              : "not offered by the kernel at INIT")
                ring.withLock { $0 = nil }
            }
        }
        return written
    }
}
