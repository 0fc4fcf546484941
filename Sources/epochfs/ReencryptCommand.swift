import ArgumentParser
import EpochVolume
import Foundation

struct Reencrypt: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reseal every block, symlink target and xattr value of an unmounted volume under its active epoch.",
        discussion: """
            Items sealed under older epochs (kept after rekeys) are rewritten under the active \
            one with the same plaintext, so that `retire` can drop the older keys. Progress goes \
            to stderr: a bar (blocks, MB/s, ETA) on a terminal, plain lines otherwise. Safe to \
            kill at any moment: every item stays readable, and running it again finishes the \
            job, skipping what is resealed already. A mounted volume is re-encrypted through \
            its control file instead (reencrypt start).
            """)

    @OptionGroup var volume: VolumeOptions

    func run() throws {
        try runReportingErrors {
            let owner = try volume.claim(for: "reencrypt")
            defer { withExtendedLifetime(owner) {} }
            let live = try LiveVolume(backing: volume.backing, journal: try volume.openJournal())
            try live.requireCurrentFormat()
            let tree = try BackingTree(volume: live)
            let line = ProgressLine(plainLines: true)
            let done = try Reencryption.run(tree, offline: true) { progress in
                line.update(progressBar(progress))
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
}

/// `re-encrypting to epoch 3 [#####-----]  50%  1200/2400 blocks  80.1 MB/s  ETA 0:15`.
private func progressBar(_ progress: ReencryptionProgress) -> String {
    let fraction = progress.blocksTotal == 0 ? 1 : min(1, Double(progress.blocksDone) / Double(progress.blocksTotal))
    let filled = Int(fraction * 30)
    let eta = progress.secondsLeft.map { String(format: "%d:%02d", Int($0) / 60, Int($0) % 60) } ?? "-"
    return "re-encrypting to epoch \(progress.target) [" + String(repeating: "#", count: filled)
        + String(repeating: "-", count: 30 - filled) + "] \(Int(fraction * 100))%  \(progress.blocksDone)/\(progress.blocksTotal) blocks  "
        + String(format: "%.1f MB/s", progress.megabytesPerSecond) + "  ETA \(eta)"
}
