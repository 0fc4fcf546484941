import Glibc
import Synchronization

/// Threads that serve the ring requests that may wait long (an fsync, anything on a control
/// file: a rekey runs a key command, a retire scans the volume), so that the queue's thread
/// goes on serving the others meanwhile. Every other request is served by the queue's thread
/// itself, which answers a burst of them in one submission.
final class RingWorkers: Sendable {
    private struct Jobs {
        var waiting: [@Sendable () -> Void] = []
        var stopping = false
    }

    private let jobs = Mutex(Jobs())
    private let available = Semaphore()
    private let threads = Mutex<[pthread_t]>([])

    init(count: Int) {
        for _ in 0..<count {
            var thread = pthread_t()
            let context = Unmanaged.passRetained(self).toOpaque()
            guard pthread_create(&thread, nil, { context in
                let workers = Unmanaged<RingWorkers>.fromOpaque(context!).takeRetainedValue()
                workers.serve()
                return nil
            }, context) == 0 else {
                Unmanaged<RingWorkers>.fromOpaque(context).release()
                continue // fewer workers: jobs wait for the others
            }
            threads.withLock { $0.append(thread) }
        }
    }

    func run(_ job: @escaping @Sendable () -> Void) {
        jobs.withLock { $0.waiting.append(job) }
        available.post()
    }

    /// Ends the threads once the jobs handed to them are done.
    func stop() {
        let started = threads.withLock { threads in
            defer { threads = [] }
            return threads
        }
        jobs.withLock { $0.stopping = true }
        for _ in started { available.post() }
        for thread in started { pthread_join(thread, nil) }
    }

    private func serve() {
        // Signals are for libfuse's loop, as on the queues' threads.
        var all = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_BLOCK, &all, nil)
        while true {
            available.wait()
            let next = jobs.withLock { jobs -> (job: (@Sendable () -> Void)?, stop: Bool) in
                jobs.waiting.isEmpty ? (nil, jobs.stopping) : (jobs.waiting.removeFirst(), false)
            }
            if let job = next.job { job() } else if next.stop { return }
        }
    }
}
