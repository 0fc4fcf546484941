import ArgumentParser
import EpochCheck
import EpochStore
import EpochVolume

struct Upgrade: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Upgrade a volume of format 3 or 4 to format 5, offline.",
        discussion: """
            From format 3, gives every directory an empty directory record (docs/FORMAT.md \
            §5.6); then commits the header with format 5, whose records bind extended \
            attributes (§5.5) from each file's and directory's next commit on. Resumable: a run \
            that stops (a crash, a full disk) leaves a volume of the old format that mounts as \
            before, and the next run goes on. File content is not rewritten. A volume already \
            at format 5 is left alone; formats 1 and 2 are refused (copy their files out with \
            `epochfs export`).
            """)

    @OptionGroup var volume: VolumeOptions

    func run() throws {
        try runReportingErrors {
            let owner = try volume.claim(for: "upgrade")
            defer { withExtendedLifetime(owner) {} }
            let live = try LiveVolume(backing: volume.backing, journal: try volume.openJournal())
            let from = live.header.slot.formatVersion
            let result = try FormatUpgrade.run(live)
            if from == result.header.slot.formatVersion {
                print("\(volume.backing): already format \(from)")
            } else {
                print("\(volume.backing): format \(from) -> \(result.header.slot.formatVersion): \(result.directories) directories given a record"
                      + (result.alreadyDone > 0 ? ", \(result.alreadyDone) already had one" : "")
                      + " (header sequence \(result.header.sequence))")
            }
        }
    }
}
