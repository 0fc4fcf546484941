import ArgumentParser
import EpochFUSE
import EpochHeader
import EpochReconcile
import EpochVolume
import Foundation

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mount a volume with FUSE.",
        discussion: """
            Runs as a daemon unless -f is given. Unmount with `fusermount3 -u MOUNTPOINT` (or \
            SIGINT/SIGTERM to the foreground process). -o options go to libfuse and the kernel \
            (allow_other, which also turns on default_permissions; ro; ...), except epochfs's own: \
            io_uring=off keeps the requests on /dev/fuse where the kernel offers FUSE over \
            io_uring; request_metrics=off counts no requests, bytes or durations for the metrics \
            (what they cost: bench/RESULTS.md); anchor[=DIRECTORY] keeps this machine's anchor of the volume in DIRECTORY \
            (default /var/lib/epochfs), so that an older copy of the whole backing dir put back \
            is refused; accept_rollback (with anchor) accepts such a copy once, as a deliberate \
            restore. \
            Rekey it live with \
            `epochfs rekey --mount MOUNTPOINT EPOCH`.
            """)

    @OptionGroup var volume: VolumeOptions

    @Argument(help: "Where to mount the plaintext view.")
    var mountpoint: String

    @Flag(name: .short, help: "Stay in the foreground.")
    var foreground = false

    @Option(name: .short, help: ArgumentHelp("Mount options, comma-separated (repeatable).", valueName: "OPTIONS"))
    var options: [String] = []

    func run() throws {
        try runReportingErrors {
            var settings = MountSession.Options()
            settings.foreground = foreground
            let words = options.flatMap { $0.split(separator: ",").map(String.init) }
            var acceptRollback = false
            for word in words {
                switch word {
                case "io_uring=on": settings.ioUring = true
                case "io_uring=off": settings.ioUring = false
                case _ where word.hasPrefix("io_uring="): throw ValidationError("-o \(word): io_uring takes on or off")
                case "request_metrics=on": settings.requestMetrics = true
                case "request_metrics=off": settings.requestMetrics = false
                case _ where word.hasPrefix("request_metrics="): throw ValidationError("-o \(word): request_metrics takes on or off")
                case "anchor": settings.anchoring = AnchorOptions()
                case _ where word.hasPrefix("anchor="): settings.anchoring = AnchorOptions(directory: String(word.dropFirst("anchor=".count)))
                case "accept_rollback": acceptRollback = true
                default: settings.fuseOptions.append(word)
                }
            }
            if acceptRollback {
                guard settings.anchoring != nil else { throw ValidationError("-o accept_rollback needs -o anchor") }
                settings.anchoring?.acceptRollback = true
            }
            // Both made absolute before anything keeps them: the daemon's working directory
            // becomes / (so a relative header path would fail every live commit), libfuse
            // unmounts by path, and the source in /proc/self/mountinfo names the backing dir
            // from anywhere.
            var volume = volume
            volume.backing = try MountControl.absolutePath(volume.backing)
            bootstrapLogging(verbose: volume.verbose, syslog: !foreground)
            try MountSession.run(backing: volume.backing, mountpoint: try MountControl.absolutePath(mountpoint),
                                 journal: try volume.openJournal(), options: settings)
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a mounted volume's status (epoch, keyring, cutover, counters, last error) or its metrics.")

    @Argument(help: "The mount point.")
    var mountpoint: String

    @Flag(help: "Print the status JSON as the mount reports it.")
    var json = false

    @Flag(help: ArgumentHelp("Print the mount's metrics in the Prometheus text format (for node_exporter's textfile collector).",
                             discussion: "The same text as MOUNTPOINT/.epochfs/metrics."))
    var prometheus = false

    func validate() throws {
        guard !(json && prometheus) else { throw ValidationError("--json and --prometheus exclude each other") }
    }

    func run() throws {
        try runReportingErrors {
            if prometheus {
                FileHandle.standardOutput.write(try MountControl.metricsText(mountpoint: mountpoint))
                return
            }
            if json {
                print(String(decoding: try MountControl.statusJSON(mountpoint: mountpoint), as: UTF8.self), terminator: "")
                return
            }
            let status = try MountControl.status(mountpoint: mountpoint)
            let cutover = status.raftCutover == .max ? "none (inert)" : String(status.raftCutover)
            print("""
                volume        \(status.volumeID)
                epoch         \(status.epoch)
                sequence      \(status.sequence)
                raft cutover  \(cutover)
                keyring       \(status.keyring.map { "\($0.epoch) \($0.state)" }.joined(separator: ", "))
                blocks        \(status.counters?.blocksRead ?? 0) read, \(status.counters?.blocksWritten ?? 0) written, \
                \(status.counters?.authenticationFailures ?? 0) authentication failures
                failed calls  \(failedCalls(status))
                last error    \(status.lastError ?? "none")
                transport     \(describe(status.transport))
                \(describe(status.reencryption))
                """)
        }
    }
}

/// `io_uring (N requests through the rings)` or `/dev/fuse`.
private func describe(_ transport: VolumeStatus.Transport?) -> String {
    guard let transport else { return "unknown" }
    return transport.kind == "io_uring" ? "io_uring (\(transport.ringRequests) requests through the rings)" : "/dev/fuse"
}

/// The calls answered with a failing disk's errno, `ENOSPC 2, EROFS 1`, or `none`.
private func failedCalls(_ status: VolumeStatus) -> String {
    let counted = (status.counters?.errors ?? [:]).filter { $0.value > 0 }.sorted { $0.key < $1.key }
    return counted.isEmpty ? "none" : counted.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
