import ArgumentParser
import EpochHeader
import EpochSystem
import EpochVolume
import Glibc

struct Header: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Back up a volume's header, or restore it from a backup.",
        subcommands: [Backup.self, Restore.self])

    struct Backup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy the header of BACKING (both slots) to FILE, a new file (mode 0600).",
            discussion: """
                No key is needed. The backup opens with the keys that opened the volume when it \
                was taken; keep it as safe as those keys.
                """)

        @Argument(help: "The backing directory.")
        var backing: String

        @Argument(help: "The backup file to create.")
        var file: String

        func run() throws {
            try runReportingErrors {
                let slot = try HeaderBackup.backup(backing: backing, to: file)
                print("backed up the header of volume \(slot.volumeID) (epoch \(slot.epoch), sequence \(slot.sequence)) to \(file)")
            }
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put a header backup back as the header of BACKING (unmount it first).",
            discussion: """
                The header is replaced in one atomic rename. A backup of another volume is \
                refused (exit 1). A backup older than the header in place is refused (exit 3) \
                unless --yes is given: restoring it undoes the rekeys since, and what was written \
                under the epochs they added no longer decrypts; the command says what it undoes.
                """)

        @Argument(help: "The backing directory.")
        var backing: String

        @Argument(help: "The backup file.")
        var file: String

        @Flag(help: "Restore an older header too, undoing what was committed since.")
        var yes = false

        func run() throws {
            try runReportingErrors {
                let owner = try VolumeOwner(claiming: backing, for: .command(pid: getpid(), name: "header restore"))
                defer { withExtendedLifetime(owner) {} }
                let (restored, replaced) = try HeaderBackup.restore(backing: backing, from: file, undoing: yes)
                print("restored the header of volume \(restored.volumeID) (epoch \(restored.epoch), sequence \(restored.sequence))")
                if let replaced, replaced.sequence > restored.sequence {
                    print("undone: \(HeaderBackup.undone(from: replaced, to: restored))")
                }
            }
        }
    }
}
