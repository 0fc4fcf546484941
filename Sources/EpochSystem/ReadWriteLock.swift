import Glibc
#if DEBUG
import Synchronization
#endif

/// A pthread reader-writer lock: many readers or one writer. Writers go first: once a writer
/// waits, readers that arrive after it wait behind it, so a steady stream of readers (every
/// write seals under the epoch lock's read side) cannot keep a rekey's write side waiting
/// (docs/ARCHITECTURE.md, "Lock order"). glibc's rule for such a lock: a thread never takes the
/// read side while it holds it already, since the second wait would queue behind a writer that
/// waits for the first. Debug builds (the tests) trap if it does.
public final class ReadWriteLock: @unchecked Sendable {
    // pthread locks must not move in memory, so the lock lives in its own allocation.
    let lock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)
    #if DEBUG
    /// The threads holding the read side now.
    private let readers = Mutex<Set<pthread_t>>([])
    #endif

    public init() {
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        pthread_rwlock_init(lock, &attributes)
        pthread_rwlockattr_destroy(&attributes)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    public func withReadLock<R>(_ body: () throws -> R) rethrows -> R {
        #if DEBUG
        let thread = pthread_self()
        precondition(!readers.withLock { $0.contains(thread) }, "ReadWriteLock: a thread took the read side twice")
        #endif
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        #if DEBUG
        readers.withLock { _ = $0.insert(thread) }
        defer { readers.withLock { _ = $0.remove(thread) } }
        #endif
        return try body()
    }

    public func withWriteLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}
