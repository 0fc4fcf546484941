import CFuse3
import CLinux
import CURing
import EpochVolume
import Foundation
import Glibc
import Logging
import Synchronization

/// FUSE over io_uring (Linux 6.14+, protocol 7.42), in epochfs itself: libfuse 3.14 has none
/// of it. The INIT request and reply, interrupts, forgets and notifications stay on /dev/fuse
/// (libfuse's loop keeps reading it); once every queue has registered an entry, the kernel
/// sends every other request through the rings (`RingQueue`), to the same low-level handlers.
///
/// Life: `start` (after daemonizing: threads do not survive a fork) makes a ring per possible
/// CPU; the INIT reply (`DeviceIO`) offers the transport only if the kernel did and `prepare`
/// made every entry; after the reply `register` lets the queues register; `stop` ends them.
final class RingTransport: @unchecked Sendable {
    /// Requests each queue can hold at once (libfuse 3.18's default depth is 8).
    static let entriesPerQueue = 8
    static let parameter = "/sys/module/fuse/parameters/enable_uring"

    let session: OpaquePointer
    let device: Int32
    let status: TransportStatus
    /// An eventfd each queue's ring waits on: written once, to stop them.
    let stopSignal: Int32
    /// Serve what may wait long, for every queue.
    let workers = RingWorkers(count: entriesPerQueue)
    private let logger: Logger
    private var queues: [RingQueue] = []
    private var prepared: [[RingEntry]] = []
    /// The first refusal is logged; later ones of other entries say nothing new.
    private let refused = Atomic<Bool>(false)

    private init(session: OpaquePointer, device: Int32, status: TransportStatus, stopSignal: Int32, logger: Logger) {
        self.session = session
        self.device = device
        self.status = status
        self.stopSignal = stopSignal
        self.logger = logger
    }

    /// A ring per possible CPU, or nil (with the log line saying why) where the kernel does not
    /// offer the transport or io_uring cannot be set up: the session then serves /dev/fuse alone.
    static func start(session: OpaquePointer, status: TransportStatus, logger: Logger) -> RingTransport? {
        let enabled = (try? String(contentsOfFile: parameter, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        guard enabled == "Y" || enabled == "1" else {
            let reason = enabled == nil ? "this kernel has no FUSE over io_uring" : "off in the kernel (\(parameter) is \(enabled!))"
            logger.warning("FUSE transport: /dev/fuse; io_uring \(reason)")
            return nil
        }
        guard let queueCount = possibleCPUs() else {
            logger.warning("FUSE transport: /dev/fuse; io_uring: cannot read /sys/devices/system/cpu/possible")
            return nil
        }
        let stopSignal = epochfs_eventfd()
        guard stopSignal >= 0 else {
            logger.warning("FUSE transport: /dev/fuse; io_uring: eventfd: \(String(cString: strerror(errno)))")
            return nil
        }
        let transport = RingTransport(session: session, device: fuse_session_fd(session), status: status,
                                      stopSignal: stopSignal, logger: logger)
        for id in 0..<queueCount {
            let queue = RingQueue(id: UInt16(id), transport: transport)
            let failure = queue.start()
            if failure != 0 {
                logger.warning("FUSE transport: /dev/fuse; io_uring setup failed: \(String(cString: strerror(failure)))")
                transport.stop()
                return nil
            }
            transport.queues.append(queue)
        }
        return transport
    }

    /// Makes every queue's entries, their payload buffers as large as the kernel will fill
    /// (the largest write, or the pages of the largest read).
    func prepare(maxWrite: Int, maxPages: Int) {
        let payloadCapacity = max(8192, maxWrite, maxPages * Int(getpagesize()))
        prepared = queues.map { _ in (0..<Self.entriesPerQueue).map { RingEntry(index: $0, payloadCapacity: payloadCapacity) } }
    }

    /// The INIT reply announcing the transport reached the kernel: the queues register.
    func register() {
        // Before the queues register: the first request the rings serve may be a status read.
        status.ring.store(true, ordering: .relaxed)
        for (queue, entries) in zip(queues, prepared) { queue.register(entries) }
        prepared = []
        logger.notice("FUSE transport: io_uring, \(queues.count) queues of \(Self.entriesPerQueue) requests")
    }

    /// The kernel did not take the transport at INIT: the session serves /dev/fuse.
    func declined(_ reason: String) {
        logger.warning("FUSE transport: /dev/fuse; io_uring \(reason)")
        stop()
    }

    /// Ends every queue's thread; the kernel cancels what their rings still hold as they close.
    func stop() {
        var one: UInt64 = 1
        _ = write(stopSignal, &one, MemoryLayout<UInt64>.size)
        for queue in queues { queue.join() }
        queues = []
        workers.stop()
        close(stopSignal)
    }

    /// An entry came back with an error: refused at registration (the kernel then serves
    /// /dev/fuse alone) or ended with the connection (ENOTCONN, ECONNABORTED, ECANCELED).
    func ended(entry: Int, queue: UInt16, errno: Int32) {
        guard ![ENOTCONN, ECONNABORTED, ECANCELED].contains(errno), !refused.exchange(true, ordering: .relaxed) else { return }
        status.ring.store(false, ordering: .relaxed)
        logger.error("FUSE transport: io_uring refused by the kernel (queue \(queue), entry \(entry)): \(String(cString: strerror(errno))); serving /dev/fuse")
    }

    func failed(queue: UInt16, errno: Int32) {
        logger.error("FUSE transport: io_uring queue \(queue) stopped: \(String(cString: strerror(errno)))")
    }

    func malformed(queue: UInt16) {
        logger.error("FUSE transport: io_uring queue \(queue) received a request whose sizes do not add up; answered EIO")
    }

    /// The reply libfuse writes from a queue thread, if it answers that thread's ring request:
    /// it goes into the entry, committed by the thread after the handler returns.
    static func takeReply(_ vectors: UnsafePointer<iovec>, _ count: Int) -> Int? {
        guard let context = epochfs_thread_context() else { return nil }
        return Unmanaged<RingEntry>.fromOpaque(context).takeUnretainedValue().takeReply(vectors, count)
    }

    /// The kernel's number of ring queues: one per possible CPU (the highest index + 1).
    private static func possibleCPUs() -> Int? {
        guard let text = try? String(contentsOfFile: "/sys/devices/system/cpu/possible", encoding: .utf8) else { return nil }
        let highest = text.split(whereSeparator: { $0 == "," || $0 == "-" || $0 == "\n" }).compactMap { Int($0) }.max()
        return highest.map { $0 + 1 }
    }
}

/// What the mount's status reports of the transport: whether the rings serve, and how many
/// requests they have served.
final class TransportStatus: Sendable {
    let ring = Atomic<Bool>(false)
    let ringRequests = Atomic<UInt64>(0)

    var report: VolumeStatus.Transport {
        VolumeStatus.Transport(kind: ring.load(ordering: .relaxed) ? "io_uring" : "dev_fuse", ringRequests: ringRequests.load(ordering: .relaxed))
    }
}
