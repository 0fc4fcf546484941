import CoreMetrics
import EpochFormat
import Prometheus
import Synchronization

/// The mount's metrics, read at `MOUNT/.epochfs/metrics` and by `epochfs status --prometheus`
/// (docs/MOUNTING.md, "The control file"). Code records through swift-metrics (`factory`); a registry of this
/// volume's own (a test process mounts many) keeps them and renders the Prometheus text format.
public final class VolumeMetrics: Sendable {
    /// Every metric a mount reports and what it means, the volume's and the FUSE frontend's.
    static let descriptions: [String: MetricDescription] = [
        "epochfs_requests_total": .init("FUSE requests served, by operation."),
        "epochfs_request_errors_total": .init("FUSE requests answered with an error, by errno (ENOENT of a lookup included)."),
        "epochfs_bytes_total": .init("Plaintext bytes read and written through the mount."),
        "epochfs_request_duration_seconds": .init("Time to serve a read, write or fsync request.", buckets: requestBuckets),
        "epochfs_blocks_total": .init("Content blocks decrypted (read) and sealed (written)."),
        "epochfs_authentication_failures_total": .init("Blocks, records or names that failed authentication (each answered EIO)."),
        "epochfs_backing_errors_total": .init("Calls answered with a failing backing file system's errno."),
        "epochfs_rekeys_total": .init("Rekeys committed by this mount."),
        "epochfs_rekey_duration_seconds": .init("Time a rekey took, from the control write to the new keyring live.", buckets: rekeyBuckets),
        "epochfs_epoch": .init("The active epoch."),
        "epochfs_reencryption_running": .init("1 while a re-encryption started through the control file runs."),
        "epochfs_reencryption_blocks_done": .init("Blocks the current or last re-encryption pass has looked at."),
        "epochfs_reencryption_blocks_total": .init("Blocks the current or last re-encryption pass looks at in all."),
    ]

    /// From a cached read (tens of microseconds) to a stalled disk.
    static let requestBuckets: [Duration] = [.microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
                                             .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10),
                                             .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
                                             .milliseconds(500), .seconds(1), .microseconds(2_500_000), .seconds(10)]
    /// A rekey is two header commits with fsyncs, and a key source that may run a command.
    static let rekeyBuckets: [Duration] = [.milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(50),
                                           .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5), .seconds(30)]

    private let registry = PrometheusCollectorRegistry()
    /// The backend for the frontend's metrics: the same registry, the same `volume` label.
    public let factory: any MetricsFactory
    private let rekeys: CoreMetrics.Counter
    private let rekeyDuration: CoreMetrics.Timer
    private let epoch: CoreMetrics.Gauge
    private let reencryptionRunning: CoreMetrics.Gauge
    private let reencryptionBlocksDone: CoreMetrics.Gauge
    private let reencryptionBlocksTotal: CoreMetrics.Gauge
    /// The totals of `VolumeCounters` (which the hot paths count and status shows) and the
    /// counters a scrape advances to them.
    private let countedTotals: [(counter: CoreMetrics.Counter, total: @Sendable (VolumeCounters) -> UInt64)]
    /// What each of `countedTotals` was advanced to by the last scrape.
    private let exported: Mutex<[UInt64]>

    public init(volumeID: VolumeID) {
        let factory = DescribedMetricsFactory(registry: registry, volumeLabel: ("volume", volumeID.description),
                                              descriptions: Self.descriptions)
        self.factory = factory
        rekeys = Counter(label: "epochfs_rekeys_total", factory: factory)
        rekeyDuration = Timer(label: "epochfs_rekey_duration_seconds", factory: factory)
        epoch = Gauge(label: "epochfs_epoch", factory: factory)
        reencryptionRunning = Gauge(label: "epochfs_reencryption_running", factory: factory)
        reencryptionBlocksDone = Gauge(label: "epochfs_reencryption_blocks_done", factory: factory)
        reencryptionBlocksTotal = Gauge(label: "epochfs_reencryption_blocks_total", factory: factory)
        var totals: [(counter: CoreMetrics.Counter, total: @Sendable (VolumeCounters) -> UInt64)] = [
            (Counter(label: "epochfs_blocks_total", dimensions: [("operation", "read")], factory: factory),
             { $0.blocksRead.load(ordering: .relaxed) }),
            (Counter(label: "epochfs_blocks_total", dimensions: [("operation", "write")], factory: factory),
             { $0.blocksWritten.load(ordering: .relaxed) }),
            (Counter(label: "epochfs_authentication_failures_total", factory: factory),
             { $0.authenticationFailures.load(ordering: .relaxed) }),
        ]
        for (_, name) in VolumeCounters.countedErrors {
            totals.append((Counter(label: "epochfs_backing_errors_total", dimensions: [("errno", name)], factory: factory),
                           { $0.failedCalls[name] ?? 0 }))
        }
        countedTotals = totals
        exported = Mutex([UInt64](repeating: 0, count: totals.count))
    }

    /// Runs a rekey, counting it and its duration when it commits.
    package func timeRekey<R>(_ body: () throws -> R) rethrows -> R {
        let start = ContinuousClock.now
        let result = try body()
        rekeyDuration.record(duration: start.duration(to: .now))
        rekeys.increment()
        return result
    }

    /// The metrics in the Prometheus text format, as of now.
    public func render(counters: VolumeCounters, epoch active: Epoch, reencryption: ReencryptionStatus) -> [UInt8] {
        exported.withLock { exported in
            for (index, counted) in countedTotals.enumerated() {
                let total = counted.total(counters)
                // Totals only grow; two scrapes advance a counter once (under this lock).
                if total > exported[index] { counted.counter.increment(by: total - exported[index]) }
                exported[index] = max(total, exported[index])
            }
        }
        epoch.record(active.rawValue)
        reencryptionRunning.record(reencryption.running ? 1 : 0)
        reencryptionBlocksDone.record(reencryption.blocksDone ?? 0)
        reencryptionBlocksTotal.record(reencryption.blocksTotal ?? 0)
        return registry.emitToBuffer()
    }
}

extension CoreMetrics.Timer {
    /// Records `duration` in nanoseconds.
    public func record(duration: Duration) {
        let (seconds, attoseconds) = duration.components
        recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
