import Foundation
import Logging

/// The reconciler of a host: passes over its volumes towards the committed epoch of its
/// source, at start, at every change of the source, every `interval` seconds, and after a pass
/// that left a failure, again after a capped exponential backoff. Each pass's report goes to
/// the log, the state file and, with an etcd source, the cluster prefix.
public final class Reconciler: Sendable {
    public struct Options: Sendable {
        public var member: String
        /// Seconds between passes when nothing happens.
        public var interval: Double = 300
        /// The first retry after a failed pass, and the longest wait between retries.
        public var retryBase: Double = 1
        public var retryCap: Double = 60
        /// Where each pass's report is written (JSON), or nil.
        public var statePath: String?

        public init(member: String) { self.member = member }
    }

    public let source: any EpochSource
    public let pass: ReconcilePass
    public let options: Options
    public let publisher: ClusterPublisher?
    let logger: Logger

    public init(volumes: [ReconciledVolume], source: any EpochSource, options: Options, publisher: ClusterPublisher?, logger: Logger) {
        self.source = source
        self.pass = ReconcilePass(volumes: volumes, logger: logger)
        self.options = options
        self.publisher = publisher
        self.logger = logger
    }

    /// One pass: reads the committed epoch, brings every volume to it, reports.
    public func runPass() async -> MemberReport {
        let report: MemberReport
        do {
            let target = try await source.read()
            report = MemberReport(member: options.member, target: target, sourceError: nil,
                                  volumes: pass.run(target: target), time: Date().timeIntervalSince1970)
        } catch {
            logger.error("\(error)")
            report = MemberReport(member: options.member, target: nil, sourceError: "\(error)", volumes: [],
                                  time: Date().timeIntervalSince1970)
        }
        summarize(report)
        writeState(report)
        await publisher?.publish(report)
        return report
    }

    /// Passes until the task is cancelled.
    public func run() async {
        let (triggers, trigger) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let watch = source.watch { trigger.yield() }
        let interval = options.interval
        let timer = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(interval))
                trigger.yield()
            }
        }
        let keepAlive = publisher.map { publisher in Task { await publisher.keepAlive() } }
        defer {
            watch.stop()
            timer.cancel()
            keepAlive?.cancel()
        }
        logger.notice("reconciling \(pass.volumes.count) volume(s) with \(source.spec)")
        trigger.yield()
        var backoff = Backoff(base: options.retryBase, cap: options.retryCap)
        var retry: Task<Void, Never>?
        for await _ in triggers {
            if Task.isCancelled { break }
            retry?.cancel()
            let report = await runPass()
            guard report.target == nil || report.volumes.contains(where: { $0.state == .failed }) else {
                backoff.reset()
                continue
            }
            let delay = backoff.next()
            logger.info("retrying in \(delay) s")
            retry = Task {
                try? await Task.sleep(for: .seconds(delay))
                if !Task.isCancelled { trigger.yield() }
            }
        }
    }

    private func summarize(_ report: MemberReport) {
        guard let target = report.target else { return }
        let counts = Dictionary(grouping: report.volumes, by: \.state).mapValues(\.count)
        let summary = [VolumeReport.State.atTarget, .rekeyed, .aboveTarget, .failed].compactMap { state in
            counts[state].map { "\($0) \(state.rawValue)" }
        }.joined(separator: ", ")
        if report.converged {
            logger.info("pass at epoch \(target): \(summary)")
        } else {
            logger.warning("pass at epoch \(target): \(summary)")
        }
    }

    /// Written whole and renamed over the old one, so a reader never sees half of it.
    private func writeState(_ report: MemberReport) {
        guard let path = options.statePath else { return }
        do {
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
            try Data(try jsonBytes(report)).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            logger.warning("cannot write the state file \(path): \(error)")
        }
    }
}
