import ArgumentParser
import EpochReconcile
import Foundation
import Logging
import Synchronization

struct Reconcile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Keep this host's volumes at the committed epoch of a source (file, command or etcd).",
        subcommands: [ReconcileRun.self, ReconcileStatus.self],
        defaultSubcommand: ReconcileRun.self)
}

struct ReconcileRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Pass over the volumes at start, at every change of the source and on a timer.",
        discussion: """
            The volumes are the BACKING directories given, or else every /etc/epochfs/*.conf with \
            BACKING= (and KEYSOURCE=), the files the epochfs@ systemd template reads. SOURCE is \
            file:PATH (watched with inotify, re-read every --poll seconds), command:CMD (run every \
            --poll seconds; prints the epoch) or etcd:ENDPOINTS/KEY (watched; with --member each \
            pass is published under KEY/members/MEMBER on a lease). Each pass reads every volume's \
            header: at the epoch it is skipped, below it rekeyed (live through the control file \
            when mounted), above it left alone and reported as an error. A pass that left a failure \
            is retried after 1, 2, 4 ... up to --retry-cap seconds. With --once, one pass: exit 0 \
            when every volume is at the epoch, 1 when a volume or the source failed, 3 when a volume \
            is above it.
            """)

    @Option(help: ArgumentHelp("Where the committed epoch comes from.", valueName: "SOURCE"))
    var source: String

    @Argument(help: "Backing directories (default: the volumes of the conf files).")
    var backings: [String] = []

    @Option(help: ArgumentHelp("Key source of the BACKING directories given, overriding the ones they remember.", valueName: "SPEC"))
    var keySource: String?

    @Option(help: ArgumentHelp("The directory of the volumes' conf files.", valueName: "DIR"))
    var configDirectory = "/etc/epochfs"

    @Flag(help: "Run one pass and exit with its outcome.")
    var once = false

    @Option(help: "Seconds between passes when nothing changes.")
    var interval = 300.0

    @Option(help: "Seconds between reads of a file or command source.")
    var poll = 10.0

    @Option(help: "Seconds before the first retry of a failed pass; it doubles up to --retry-cap.")
    var retryBase = 1.0

    @Option(help: "The longest wait between retries, in seconds.")
    var retryCap = 60.0

    @Option(help: "This member's name in the cluster status (etcd source).")
    var member = ProcessInfo.processInfo.hostName

    @Option(help: "Seconds the published status outlives this reconciler (etcd lease TTL).")
    var leaseTTL = 10

    @Option(help: ArgumentHelp("Where each pass's report is written as JSON ('' for nowhere).", valueName: "FILE"))
    var state = "/run/epochfs/reconcile.json"

    func validate() throws {
        guard interval > 0, poll > 0, retryBase > 0, retryCap >= retryBase else {
            throw ValidationError("--interval, --poll and --retry-base must be positive, --retry-cap at least --retry-base")
        }
        guard leaseTTL >= 2 else { throw ValidationError("--lease-ttl must be 2 or more") }
    }

    func run() throws {
        bootstrapLogging(verbose: true)
        let logger = Logger(label: "epochfs.reconcile")
        var reconciler: Reconciler!
        try runReportingErrors {
            let epochSource = try EpochSourceSpec.parse(source, poll: poll)
            let volumes = backings.isEmpty
                ? try ReconciledVolume.configured(in: configDirectory)
                : backings.map { ReconciledVolume(name: $0, backing: $0, keySource: keySource) }
            if volumes.isEmpty { logger.warning("no volumes: none named and no conf file with BACKING= in \(configDirectory)") }
            var options = Reconciler.Options(member: member)
            options.interval = interval
            options.retryBase = retryBase
            options.retryCap = retryCap
            options.statePath = state.isEmpty ? nil : state
            let publisher = (epochSource as? EtcdEpochSource).map {
                ClusterPublisher(client: $0.client, epochKey: $0.key, member: member, leaseTTL: leaseTTL)
            }
            reconciler = Reconciler(volumes: volumes, source: epochSource, options: options, publisher: publisher, logger: logger)
        }
        let daemon = reconciler!
        guard once else {
            try waitFor { await daemon.run() }
            return
        }
        let report = try waitFor { await daemon.runPass() }
        if report.target == nil || report.volumes.contains(where: { $0.state == .failed }) { throw ExitCode(1) }
        if report.volumes.contains(where: { $0.state == .aboveTarget }) { throw ExitCode(3) }
    }
}

struct ReconcileStatus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show every member's volumes and the highest epoch every live member holds.",
        discussion: """
            With --source etcd:ENDPOINTS/KEY, every live member's last pass as published under \
            KEY/members/; otherwise this host's, from the state file. A raft leader wraps under the \
            cluster epoch, never under one a member lacks.
            """)

    @Option(help: ArgumentHelp("An etcd source: show every member of its cluster.", valueName: "SOURCE"))
    var source: String?

    @Option(help: ArgumentHelp("This host's state file.", valueName: "FILE"))
    var state = "/run/epochfs/reconcile.json"

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        bootstrapLogging(verbose: false)
        try runReportingErrors {
            let report: ClusterReport
            if let source {
                guard let etcd = try EpochSourceSpec.parse(source, poll: 10) as? EtcdEpochSource else {
                    throw ValidationError("--source must be an etcd:ENDPOINTS/KEY source")
                }
                report = try waitFor { try await ClusterPublisher.clusterReport(client: etcd.client, epochKey: etcd.key) }
            } else {
                guard let data = FileManager.default.contents(atPath: state) else {
                    throw CLIError("\(state): not readable; is `epochfs reconcile` running here?")
                }
                let member = try JSONDecoder().decode(MemberReport.self, from: data)
                report = ClusterReport(target: member.target, members: [member])
            }
            if json {
                print(try jsonLine(report))
            } else {
                printClusterReport(report)
            }
        }
    }
}

private func printClusterReport(_ report: ClusterReport) {
    print("committed epoch  \(report.target.map(String.init) ?? "unknown")")
    print("cluster epoch    \(report.clusterEpoch.map(String.init) ?? "unknown") (the highest epoch every live member holds)")
    var rows = [["MEMBER", "VOLUME", "EPOCH", "SEQUENCE", "STATE", "AGE", "LAST ERROR"]]
    let now = Date().timeIntervalSince1970
    for member in report.members {
        if let error = member.sourceError {
            rows.append([member.member, "-", "-", "-", "source-failed", age(now - member.time), error])
        }
        for volume in member.volumes {
            rows.append([member.member, volume.name, volume.epoch.map(String.init) ?? "-", volume.sequence.map(String.init) ?? "-",
                         volume.state.rawValue, age(now - volume.time), volume.lastError ?? ""])
        }
    }
    let widths = (0..<rows[0].count - 1).map { column in rows.map { $0[column].count }.max()! }
    for row in rows {
        print((zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) } + [row.last!]).joined(separator: "  "))
    }
}

private func age(_ seconds: Double) -> String { "\(Int(max(0, seconds)))s" }

/// Runs async work from a synchronous command and waits for it (the commands stay
/// synchronous: `mount` forks to daemonize, which must happen before any thread starts).
func waitFor<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let result = Mutex<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let outcome: Result<T, any Error>
        do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
        result.withLock { $0 = outcome }
        done.signal()
    }
    done.wait()
    return try result.withLock { $0! }.get()
}
