import CLinux
import CoreMetrics
import EpochMetrics
import EpochVolume
import Synchronization

/// The frontend's part of the mount's metrics (VolumeMetrics keeps and renders them): requests
/// by operation, error replies by errno, plaintext bytes read and written, and how long reads,
/// writes and fsyncs take.
final class RequestMetrics: Sendable {
    /// Every operation name a handler counts under.
    static let operations = [
        "lookup", "forget", "getattr", "setattr", "readlink", "mknod", "mkdir", "unlink", "rmdir", "symlink", "rename", "link",
        "open", "read", "write", "release", "fsync", "opendir", "readdir", "readdirplus", "releasedir", "fsyncdir", "statfs",
        "create", "fallocate", "setxattr", "getxattr", "listxattr", "removexattr",
    ]

    private let factory: any MetricsFactory
    /// Made once: a request only looks its counter up.
    private let requests: [String: Counter]
    private let errors = Mutex<[Int32: Counter]>([:])
    let bytesRead: Counter
    let bytesWritten: Counter
    let readDuration: Timer
    let writeDuration: Timer
    let fsyncDuration: Timer

    init(factory: any MetricsFactory) {
        self.factory = factory
        requests = Dictionary(uniqueKeysWithValues: Self.operations.map {
            ($0, Counter(label: "epochfs_requests_total", dimensions: [("operation", $0)], factory: factory))
        })
        bytesRead = Counter(label: "epochfs_bytes_total", dimensions: [("operation", "read")], factory: factory)
        bytesWritten = Counter(label: "epochfs_bytes_total", dimensions: [("operation", "write")], factory: factory)
        func duration(_ operation: String) -> Timer {
            Timer(label: "epochfs_request_duration_seconds", dimensions: [("operation", operation)], factory: factory)
        }
        readDuration = duration("read")
        writeDuration = duration("write")
        fsyncDuration = duration("fsync")
    }

    func count(_ operation: String) {
        requests[operation]?.increment()
    }

    /// Counts a request answered with `errno`, by its symbolic name.
    func countError(_ errno: Int32) {
        let counter = errors.withLock { known in
            if let counter = known[errno] { return counter }
            let name = epochfs_errno_name(errno).map { String(cString: $0) } ?? "errno \(errno)"
            let counter = Counter(label: "epochfs_request_errors_total", dimensions: [("errno", name)], factory: factory)
            known[errno] = counter
            return counter
        }
        counter.increment()
    }

    /// Runs `body`, recording how long it took in `timer` (failures too: a stalled disk's EIO
    /// took its time).
    func timed<R>(_ timer: Timer, _ body: () throws -> R) rethrows -> R {
        let start = ContinuousClock.now
        defer { timer.record(duration: start.duration(to: .now)) }
        return try body()
    }
}
