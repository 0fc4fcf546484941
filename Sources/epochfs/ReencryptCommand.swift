import ArgumentParser
import EpochCheck
import EpochFormat
import EpochMetrics
import EpochReconcile
import EpochStore
import EpochVolume
import Foundation

struct Reencrypt: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reseal every block, symlink target and xattr value under the active epoch: offline, or on a mount (--mount).",
        usage: """
            epochfs reencrypt BACKING [--key-source SPEC]
                   epochfs reencrypt --mount MOUNTPOINT [--rate R] [--stop]
            """,
        discussion: """
            Items sealed under older epochs (kept after rekeys) are rewritten under the active \
            one with the same plaintext, so that `retire` can drop the older keys. Progress goes \
            to stderr: a bar (blocks, MB/s, ETA) on a terminal, plain lines otherwise. Safe to \
            kill at any moment: every item stays readable, and running it again finishes the \
            job, skipping what is resealed already. With --mount it runs in the mount's daemon \
            while the mount serves (paced to R MB/s, default 20; a running one gets the new \
            pace): the command follows it with the same bar until it ends; Ctrl-C detaches and it \
            goes on. --stop stops it where it is. Exit 1 if it failed.
            """)

    @Argument(help: "The backing directory of an unmounted volume.")
    var backing: String?

    @Option(help: ArgumentHelp("Re-encrypt this mounted volume, in its daemon.", valueName: "MOUNTPOINT"))
    var mount: String?

    @Option(help: ArgumentHelp("With --mount: the pace, in MB/s of blocks looked at.", valueName: "R"))
    var rate: Double?

    @Flag(help: "With --mount: stop the re-encryption running there.")
    var stop = false

    @Option(help: ArgumentHelp("Key source, overriding the one remembered in the volume.", valueName: "SPEC"))
    var keySource: String?

    @Flag(name: .shortAndLong, help: "Log what the command does on stderr.")
    var verbose = false

    func validate() throws {
        guard (backing == nil) != (mount == nil) else { throw ValidationError("give BACKING, or --mount MOUNTPOINT") }
        if mount == nil, rate != nil || stop { throw ValidationError("--rate and --stop go with --mount") }
        if mount != nil, keySource != nil { throw ValidationError("--key-source is for BACKING; a mount has its keys") }
        if let rate, !(rate > 0 && rate.isFinite) { throw ValidationError("--rate must be a positive number of MB/s") }
        if stop, rate != nil { throw ValidationError("--stop takes no --rate") }
    }

    func run() throws {
        if let mount {
            try runReportingErrors { try live(mount) }
            return
        }
        let volume = try VolumeOptions.parse([backing!] + (keySource.map { ["--key-source", $0] } ?? []) + (verbose ? ["-v"] : []))
        try runReportingErrors {
            let owner = try volume.claim(for: "reencrypt")
            defer { withExtendedLifetime(owner) {} }
            let live = try LiveVolume(backing: volume.backing, journal: try volume.openJournal())
            try live.requireCurrentFormat()
            let tree = try BackingTree(volume: live)
            let line = ProgressLine(plainLines: true)
            let done = try Reencryption.run(tree, offline: true) { progress in
                line.update(progressBar(target: progress.target, done: progress.blocksDone, total: progress.blocksTotal,
                                        megabytesPerSecond: progress.megabytesPerSecond, secondsLeft: progress.secondsLeft))
                return true
            }
            line.clear()
            print("re-encrypted to epoch \(done.target): resealed \(done.blocks.resealed) blocks, \(done.symlinksResealed) symlinks, "
                + "\(done.xattrsResealed) xattrs; \(done.blocks.current) blocks were at epoch \(done.target) already or holes "
                + String(format: "(%.1f s, %.1f MB/s)", done.seconds, done.megabytesPerSecond))
            let left = done.keyIDs.filter { $0.key != done.target }
            guard !left.isEmpty || done.blocks.unreadable > 0 else { return }
            let epochs = left.sorted { $0.key < $1.key }.map { "epoch \($0.key): \($0.value)" }.joined(separator: ", ")
            throw CLIError("\(done.blocks.unreadable) blocks do not open and were left as they were; items still under older "
                + "epochs: \(epochs.isEmpty ? "none" : epochs) (epochfs fsck says which)")
        }
    }

    /// Starts (or stops) the mount's re-encryption and follows it until it ends.
    private func live(_ mount: String) throws {
        if stop {
            try MountControl.send(.reencryptStop, mountpoint: mount)
            print(describe(try MountControl.status(mountpoint: mount).reencryption))
            return
        }
        try MountControl.send(.reencryptStart(rate: rate), mountpoint: mount)
        detachOnInterrupt()
        let line = ProgressLine(plainLines: true)
        while true {
            let status = try MountControl.status(mountpoint: mount).reencryption
            guard let status, status.running else {
                line.clear()
                print(describe(status))
                if status?.state == .failed { throw ExitCode(1) }
                return
            }
            if let done = status.blocksDone, let total = status.blocksTotal {
                line.update(progressBar(target: status.targetEpoch ?? 0, done: done, total: total,
                                        megabytesPerSecond: status.megabytesPerSecond ?? 0, secondsLeft: status.etaSeconds))
            }
            usleep(200_000) // the pace of a progress display, nothing waits on it
        }
    }
}

/// Ctrl-C while following a mount's re-encryption leaves it running in the daemon.
private func detachOnInterrupt() {
    signal(SIGINT) { _ in
        let message = "\ndetached; the re-encryption goes on in the mount (--stop stops it)\n"
        _ = message.withCString { write(2, $0, strlen($0)) }
        _exit(130)
    }
}

/// `re-encryption done: epoch 3, 2400/2400 blocks; items by epoch: 3: 2410`, or what is known.
func describe(_ status: ReencryptionStatus?) -> String {
    guard let status, let state = status.state else { return "re-encryption: never started on this mount" }
    var text = "re-encryption \(state.rawValue)"
    if let target = status.targetEpoch, let done = status.blocksDone, let total = status.blocksTotal {
        text += ": epoch \(target), \(done)/\(total) blocks looked at"
    }
    if let items = status.itemsByEpoch, !items.isEmpty {
        text += "; items by epoch: " + items.sorted { (Epoch(parsing: $0.key) ?? 0) < (Epoch(parsing: $1.key) ?? 0) }
            .map { "\($0.key): \($0.value)" }.joined(separator: ", ")
    }
    if let error = status.error { text += "; error: \(error)" }
    return text
}

/// `re-encrypting to epoch 3 [#####-----]  50%  1200/2400 blocks  80.1 MB/s  ETA 0:15`.
private func progressBar(target: Epoch, done: Int, total: Int, megabytesPerSecond: Double, secondsLeft: Double?) -> String {
    let fraction = total == 0 ? 1 : min(1, Double(done) / Double(total))
    let filled = Int(fraction * 30)
    let eta = secondsLeft.map { String(format: "%d:%02d", Int($0) / 60, Int($0) % 60) } ?? "-"
    return "re-encrypting to epoch \(target) [" + String(repeating: "#", count: filled)
        + String(repeating: "-", count: 30 - filled) + "] \(Int(fraction * 100))%  \(done)/\(total) blocks  "
        + String(format: "%.1f MB/s", megabytesPerSecond) + "  ETA \(eta)"
}
