@testable import EpochSystem
import Foundation
import Glibc
import Synchronization
import Testing

/// The epoch lock is a `ReadWriteLock`: every write seals under its read side, a rekey installs
/// its keyring under its write side. Readers arriving after a writer started to wait must wait
/// behind it, or a steady stream of writes keeps a rekey waiting for as long as it lasts.
@Suite struct ReadWriteLockTests {
    /// A thread the test starts, which says who it is and what it reached.
    final class Party: Sendable {
        let name: String
        /// Its kernel thread id, from /proc/thread-self, once it runs.
        let threadID = Atomic<Int>(0)
        let acquired = Atomic<Bool>(false)
        let finished = Atomic<Bool>(false)

        init(_ name: String) { self.name = name }

        var hasAcquired: Bool { acquired.load(ordering: .acquiring) }
        var hasFinished: Bool { finished.load(ordering: .acquiring) }
    }

    @Test func aWaitingWriterGoesBeforeReadersThatArriveAfterIt() throws {
        let lock = ReadWriteLock()
        let order = Mutex<[String]>([])
        let writer = Party("writer"), reader = Party("reader")
        func start(_ party: Party, _ take: @escaping @Sendable (() -> Void) -> Void) {
            Thread {
                party.threadID.store(Self.currentThreadID(), ordering: .releasing)
                take {
                    party.acquired.store(true, ordering: .releasing)
                    order.withLock { $0.append(party.name) }
                }
                party.finished.store(true, ordering: .releasing)
            }.start()
        }
        let lockBytes = UnsafeRawPointer(lock.lock)..<(UnsafeRawPointer(lock.lock) + MemoryLayout<pthread_rwlock_t>.size)

        lock.withReadLock {
            // Held for reading; the writer comes and must wait.
            start(writer) { body in lock.withWriteLock(body) }
            Self.spinUntil { Self.isWaiting(writer, on: lockBytes) || writer.hasAcquired }
            #expect(!writer.hasAcquired)
            // A reader arriving now must wait behind the writer, not join the read side held.
            start(reader) { body in lock.withReadLock(body) }
            Self.spinUntil { Self.isWaiting(reader, on: lockBytes) || reader.hasAcquired }
            #expect(!reader.hasAcquired, "a reader that came after a waiting writer took the lock first")
        }
        Self.spinUntil { writer.hasFinished && reader.hasFinished }
        #expect(order.withLock { $0 } == ["writer", "reader"])
    }

    /// Waits for a condition that the threads of the test make true whatever the lock does.
    static func spinUntil(_ condition: () -> Bool) {
        while !condition() { sched_yield() }
    }

    /// Whether `party` is blocked in futex(2) on a word of the lock: waiting for it.
    static func isWaiting(_ party: Party, on lockBytes: Range<UnsafeRawPointer>) -> Bool {
        let id = party.threadID.load(ordering: .acquiring)
        guard id != 0, let text = try? String(contentsOfFile: "/proc/self/task/\(id)/syscall", encoding: .utf8) else { return false }
        // "NUMBER ARG1 ...": the syscall the thread is blocked in and its first argument, the futex word.
        let fields = text.split(separator: " ")
        guard fields.count > 1, Int(fields[0]) == futexSyscall,
              let word = UInt(fields[1].dropFirst(2), radix: 16), let address = UnsafeRawPointer(bitPattern: word)
        else { return false }
        return lockBytes.contains(address)
    }

    #if arch(x86_64)
    static let futexSyscall = 202
    #elseif arch(arm64)
    static let futexSyscall = 98
    #endif

    /// The calling thread's kernel id: /proc/thread-self links to `PID/task/TID`.
    static func currentThreadID() -> Int {
        let link = try! FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")
        return Int(link.split(separator: "/").last!)!
    }
}
