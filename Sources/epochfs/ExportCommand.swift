import ArgumentParser
import EpochStore
import EpochVolume
import Foundation

struct ExportTree: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Decrypt a file or a tree of a volume into a plain directory (offline, no FUSE).",
        discussion: """
            PATH is the plaintext path inside the volume (/ for all of it); DEST must not exist. \
            Kept as `cp -a` (or `rsync -aHAX`) keeps them: hard links, modes, owners and groups \
            (when run as root), access and modification times, user xattrs, symlinks, fifos, \
            sockets and device nodes. \
            Stops at the first block that does not authenticate (exit 1, naming the file), unless \
            --skip-bad: then such blocks are written as zeros and their byte ranges listed. \
            Progress goes to stderr: one updating line on a terminal, plain lines otherwise.
            """)

    @OptionGroup var volume: VolumeOptions

    @Argument(help: "The plaintext path to export (/ for the whole volume).")
    var path: String

    @Argument(help: "The directory or file to create with the plaintext.")
    var destination: String

    @Flag(help: "Write blocks that do not authenticate as zeros and list them, instead of stopping.")
    var skipBad = false

    func run() throws {
        try runReportingErrors {
            let tree = try BackingTree(volume: try LiveVolume(backing: volume.backing, journal: try volume.openJournal()))
            let line = ProgressLine(plainLines: true)
            let done = try Export.run(tree, path: path, to: destination, skipBad: skipBad) { progress in
                line.update("exporting: \(progress.files) files, \(progress.directories) directories, \(progress.bytes >> 20) MiB")
            }
            line.clear()
            print("exported \(done.files) files, \(done.directories) directories, \(done.symlinks) symlinks, \(done.bytes) bytes to \(destination)"
                + (done.hardLinks > 0 ? "; \(done.hardLinks) more names as hard links" : ""))
            for (file, range) in done.skipped {
                print("skipped \(file) bytes \(range.lowerBound)..<\(range.upperBound): did not authenticate, written as zeros")
            }
        }
    }
}
