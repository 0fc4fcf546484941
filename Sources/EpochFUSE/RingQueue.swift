import CFuse3
import CLinux
import CURing
import Glibc
import Synchronization

/// One FUSE ring queue (the kernel keeps one per possible CPU and hands a request to the queue
/// of the CPU it was made on) and the thread that owns its io_uring: it registers the entries,
/// serves each request it is handed on libfuse's handlers and, in one submission, commits the
/// reply and fetches the next. A request that may wait long goes to `RingWorkers` instead, and
/// its reply is committed once a worker wakes this thread with it, so that it holds up no other
/// request of its CPU. Only this thread submits to or waits on the ring (the kernel fills an
/// entry in task work that runs while it waits).
final class RingQueue: @unchecked Sendable {
    /// The waits for the stop signal and for `wake`; entries use their index.
    private static let stopTag = UInt64.max
    private static let wakeTag = UInt64.max - 1

    let id: UInt16
    private let transport: RingTransport
    /// Made, used and ended by the thread alone.
    private var ring: OpaquePointer! = nil
    private var entries: [RingEntry] = []
    private var thread = pthread_t()
    /// Posted when the ring is made (or failed to be), and when the entries are ready to register.
    private let created = Semaphore()
    private let registering = Semaphore()
    private let setupError = Atomic<Int32>(0)
    /// Entries a worker has answered, to commit; `wake` (an eventfd) is written after each.
    private let answered = Mutex<[RingEntry]>([])
    private let wake = epochfs_eventfd()

    init(id: UInt16, transport: RingTransport) {
        self.id = id
        self.transport = transport
    }

    deinit { close(wake) }

    /// Starts the thread and waits until it has its ring; the errno of io_uring_setup on failure.
    func start() -> Int32 {
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(&thread, nil, { context in
            let queue = Unmanaged<RingQueue>.fromOpaque(context!).takeRetainedValue()
            queue.run()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<RingQueue>.fromOpaque(context).release()
            return result
        }
        created.wait()
        let failure = setupError.load(ordering: .acquiring)
        if failure != 0 { join() }
        return failure
    }

    /// Gives the entries (made before the INIT reply, so that a failure can still decline) to
    /// the thread, which registers them with the kernel.
    func register(_ entries: [RingEntry]) {
        self.entries = entries
        registering.post()
    }

    /// Waits for the thread to end after the transport's stop signal (which a thread still
    /// waiting for its entries is woken up to see).
    func join() {
        registering.post()
        pthread_join(thread, nil)
    }

    private func run() {
        // Signals are for libfuse's loop (its handlers end the session), not this thread.
        var all = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_BLOCK, &all, nil)
        let queueDepth = UInt32(RingTransport.entriesPerQueue * 2 + 3)
        var failure: Int32 = 0
        ring = epochfs_ring_create(queueDepth, &failure)
        setupError.store(failure, ordering: .releasing)
        created.post()
        guard ring != nil else { return }
        defer { epochfs_ring_destroy(ring) }
        guard wake >= 0, epochfs_ring_queue_poll(ring, transport.stopSignal, Self.stopTag) == 0,
              epochfs_ring_queue_poll(ring, wake, Self.wakeTag) == 0 else { return }
        registering.wait()
        for entry in entries { queue(EPOCHFS_FUSE_IO_URING_CMD_REGISTER, entry, commitID: 0) }
        serve()
    }

    /// Waits for completions until the stop signal: a completed entry holds a request.
    private func serve() {
        var result: Int32 = 0
        var tag: UInt64 = 0
        while true {
            let submitted = epochfs_ring_submit_and_wait(ring)
            if submitted < 0 && submitted != -EINTR && submitted != -EAGAIN && submitted != -EBUSY {
                transport.failed(queue: id, errno: -submitted)
                return
            }
            while epochfs_ring_next_completion(ring, &result, &tag) == 1 {
                if tag == Self.stopTag { return }
                if tag == Self.wakeTag {
                    commitAnswered()
                    continue
                }
                let entry = entries[Int(tag)]
                if result == 0 && entry.mayWaitLong {
                    transport.workers.run { [self] in
                        handle(entry)
                        answered.withLock { $0.append(entry) }
                        var one: UInt64 = 1
                        _ = write(wake, &one, MemoryLayout<UInt64>.size)
                    }
                } else if result == 0 {
                    handle(entry)
                    queue(EPOCHFS_FUSE_IO_URING_CMD_COMMIT_AND_FETCH, entry, commitID: entry.commitID)
                } else {
                    // The kernel refused the entry, or ended it with the connection (ENOTCONN).
                    transport.ended(entry: entry.index, queue: id, errno: -result)
                }
            }
        }
    }

    /// Commits what the workers answered, and waits for `wake` again.
    private func commitAnswered() {
        var count: UInt64 = 0
        _ = read(wake, &count, MemoryLayout<UInt64>.size)
        let done = answered.withLock { answered in
            defer { answered = [] }
            return answered
        }
        for entry in done { queue(EPOCHFS_FUSE_IO_URING_CMD_COMMIT_AND_FETCH, entry, commitID: entry.commitID) }
        _ = epochfs_ring_queue_poll(ring, wake, Self.wakeTag)
    }

    /// Hands the request to libfuse's low-level dispatch; its reply comes back through the
    /// session's writev hook on the calling thread (`RingTransport.takeReply`) into the entry.
    private func handle(_ entry: RingEntry) {
        transport.status.ringRequests.add(1, ordering: .relaxed)
        guard var request = entry.takeRequest() else {
            transport.malformed(queue: id)
            return entry.fail(EIO)
        }
        epochfs_set_thread_context(Unmanaged.passUnretained(entry).toOpaque())
        fuse_session_process_buf(transport.session, &request)
        epochfs_set_thread_context(nil)
        // Every request the kernel sends through the ring awaits a reply.
        if !entry.replied { entry.fail(EIO) }
    }

    private func queue(_ command: Int, _ entry: RingEntry, commitID: UInt64) {
        // The queue holds two commands per entry and the two waits, so it is never full.
        _ = epochfs_ring_queue_fuse_command(ring, transport.device, UInt32(command), id, commitID, entry.buffers,
                                             UInt64(entry.index))
    }
}

/// A counting semaphore for the hand-offs between the session and a queue's thread.
final class Semaphore: @unchecked Sendable {
    private let semaphore = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)

    init() { sem_init(semaphore, 0, 0) }
    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    func post() { sem_post(semaphore) }
    func wait() { while sem_wait(semaphore) != 0 && errno == EINTR {} }
}
