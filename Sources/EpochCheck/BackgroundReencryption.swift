import EpochFormat
import EpochIO
import EpochMetrics
import EpochStore
import Glibc
import Synchronization

/// Re-encryption of a mounted volume on a thread of its own while the mount serves (`reencrypt
/// start [RATE]`, `reencrypt stop`): the same walk as offline (Reencryption), a few blocks of a
/// file at a time so that the file's readers and writers wait little, paced to RATE MB/s.
public final class BackgroundReencryption: Sendable {
    /// MB/s: a fraction of what the disk does, so that the mount stays responsive.
    public static let defaultRate = 20.0
    /// Blocks of a file resealed in place under one hold of its lock.
    static let chunk = 16
    /// Largest file resealed by copy-on-write, which holds the namespace (lookups, creates,
    /// renames) for the whole copy: a fraction of a second at the disk's speed.
    static let copyLimit = 64 << 20

    private struct State {
        var thread: pthread_t?
        var progress: ReencryptionProgress?
        var error: String?
        /// How the last walk ended.
        var ended: ReencryptionState?
    }

    private let tree: BackingTree
    /// The items by epoch the walks count, kept exact through the tree's changes.
    private let census: LiveCensus
    private let state = Mutex(State())
    private let running = Atomic(false)
    private let stopRequested = Atomic(false)
    /// MB/s, as a bit pattern (Atomic has no Double).
    private let rate = Atomic(defaultRate.bitPattern)

    public init(tree: BackingTree) {
        self.tree = tree
        census = LiveCensus(tracking: tree.changes)
    }

    /// Starts the walk, or sets the pace of the one running.
    public func start(rate megabytesPerSecond: Double = defaultRate) throws {
        rate.store(megabytesPerSecond.bitPattern, ordering: .relaxed)
        guard running.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        join()
        stopRequested.store(false, ordering: .relaxed)
        state.withLock {
            $0.error = nil
            $0.ended = nil
        }
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(&thread, nil, { context in
            let walk = Unmanaged<BackgroundReencryption>.fromOpaque(context!).takeRetainedValue()
            walk.walk()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<BackgroundReencryption>.fromOpaque(context).release()
            running.store(false, ordering: .releasing)
            throw SystemError("pthread_create", path: "re-encryption", errno: result)
        }
        state.withLock { $0.thread = thread }
    }

    /// Stops the walk where it is (a later start resumes it) and waits for it.
    public func stop() {
        stopRequested.store(true, ordering: .relaxed)
        join()
    }

    public var status: ReencryptionStatus {
        let isRunning = running.load(ordering: .acquiring)
        let (progress, error, ended) = state.withLock { ($0.progress, $0.error, $0.ended) }
        let current: ReencryptionState? = isRunning ? .running : ended
        guard let progress else {
            return ReencryptionStatus(running: isRunning, state: current, error: error)
        }
        let census = self.census.total(in: tree)
        return ReencryptionStatus(running: isRunning, state: current, rate: Double(bitPattern: rate.load(ordering: .relaxed)),
                                  targetEpoch: progress.target, blocksDone: progress.blocksDone, blocksTotal: progress.blocksTotal,
                                  megabytesPerSecond: progress.megabytesPerSecond, etaSeconds: progress.secondsLeft,
                                  itemsByEpoch: census.map { census in Dictionary(uniqueKeysWithValues: census.map { ($0.key.description, $0.value) }) },
                                  epochsReferenced: census?.keys.sorted(), error: error)
    }

    private func join() {
        guard let thread = state.withLock({ state -> pthread_t? in
            defer { state.thread = nil }
            return state.thread
        }) else { return }
        pthread_join(thread, nil)
    }

    /// Ahead of the pace: waits until the bytes looked at are due, in naps of at most 0.1 s so
    /// that a stop or a new rate (a higher one releases a walk held at a tiny rate) takes
    /// effect at once. The rate is kept however low it is set.
    private func waitUntilDue(_ progress: ReencryptionProgress) {
        let clock = ContinuousClock(), reported = clock.now
        while !stopRequested.load(ordering: .relaxed) {
            let due = Double(progress.bytesDone) / 1e6 / Double(bitPattern: rate.load(ordering: .relaxed))
            let elapsed = clock.now - reported
            let ahead = due - progress.seconds - (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
            guard ahead > 0 else { return }
            usleep(UInt32(min(0.1, ahead) * 1e6))
        }
    }

    private func walk() {
        defer { running.store(false, ordering: .releasing) }
        var stopped = false
        do {
            try Reencryption.run(tree, chunk: Self.chunk, copyLimit: Self.copyLimit, census: census) { progress in
                self.state.withLock { $0.progress = progress }
                self.waitUntilDue(progress)
                stopped = self.stopRequested.load(ordering: .relaxed)
                return !stopped
            }
            state.withLock { $0.ended = stopped ? .stopped : .done }
        } catch {
            state.withLock {
                $0.error = "\(error)"
                $0.ended = .failed
            }
        }
    }
}
