import Glibc
import Synchronization

/// Counters shown in the status file.
public final class VolumeCounters: Sendable {
    public let blocksRead = Atomic<UInt64>(0)
    public let blocksWritten = Atomic<UInt64>(0)
    public let authenticationFailures = Atomic<UInt64>(0)
    /// The errnos of a failing disk or file system that calls are answered with, counted.
    static let countedErrors: [(errno: Int32, name: String)] = [(ENOSPC, "ENOSPC"), (EDQUOT, "EDQUOT"), (EROFS, "EROFS"), (EIO, "EIO")]
    private let failures = Mutex<[Int32: UInt64]>([:])

    public init() {}

    /// Counts a call answered with `errno`, if it is one of `countedErrors`.
    public func countFailure(_ errno: Int32) {
        guard Self.countedErrors.contains(where: { $0.errno == errno }) else { return }
        failures.withLock { $0[errno, default: 0] += 1 }
    }

    /// Every counted errno by name, zeros included.
    public var failedCalls: [String: UInt64] {
        let counts = failures.withLock { $0 }
        return Dictionary(uniqueKeysWithValues: Self.countedErrors.map { ($0.name, counts[$0.errno] ?? 0) })
    }
}
