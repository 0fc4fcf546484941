import ArgumentParser
import EpochCheck
import EpochFormat
import EpochHeader
import EpochStore
import EpochVolume
import Foundation

struct Fsck: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check every item of an unmounted volume; with --repair, fix what is safe to fix.",
        discussion: """
            Checks both header slots, every directory IV, name, block (authentication and key \
            id), symlink target, xattr value and side file, through the same code the mount \
            uses. Prints one line per problem (by plaintext path where the names decrypt, else \
            backing:PATH) and a summary; a progress bar on stderr when it is a terminal. Exit 0 \
            only when the volume is clean, 1 when anything was wrong (repaired or not). Without \
            --repair nothing is written. --repair does only what is safe and says what it did: \
            removes orphaned side files, rewrites unreadable blocks as zeros (keeping the file's \
            stored bytes in BACKING/epochfs.lost/), moves entries whose names do not decrypt \
            into /lost+found, and recreates a lost directory IV once no name depends on it.
            """)

    @OptionGroup var volume: VolumeOptions

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @Flag(help: "Repair what is safe to repair, and say what was done.")
    var repair = false

    @Option(help: ArgumentHelp("Also check the volume against this machine's anchor in DIRECTORY (as the mount's -o anchor=DIRECTORY; /var/lib/epochfs by default there); with --repair, anchor it again as the backing dir holds it now.",
                               valueName: "DIRECTORY"))
    var anchor: String?

    func run() throws {
        var clean = false
        try runReportingErrors {
            let owner = repair ? try volume.claim(for: "fsck --repair") : nil
            defer { withExtendedLifetime(owner) {} }
            let live = try LiveVolume(backing: volume.backing, journal: try volume.openJournal())
            let tree = try BackingTree(volume: live, writing: false)
            let anchorFinding = anchor.flatMap { VolumeAnchor.finding(in: live, directory: $0) }
            let line = ProgressLine(plainLines: false)
            let json = json
            let summary = try VolumeScan.run(tree, visit: { item in
                guard !json, let problem = item.problem else { return }
                line.clear()
                print("\(item.location): \(item.kind.label): \(problem)")
            }, report: { progress in
                line.update(progressBar(progress))
            })
            line.clear()
            var repairs = repair && !summary.isClean ? VolumeRepair.run(summary.problems, in: tree) : (done: [], left: [])
            if repair, let anchor, anchorFinding != nil {
                do {
                    repairs.done.append("anchor: " + (try VolumeAnchor.reanchor(live, directory: anchor)))
                } catch {
                    repairs.left.append("anchor: \(error)")
                }
            }
            clean = summary.isClean && anchorFinding == nil
            if json {
                print(try jsonLine(FsckReport(summary, anchor: anchorFinding, repaired: repairs.done, notRepaired: repairs.left)))
                return
            }
            if let anchorFinding { print("anchor: \(anchorFinding)") }
            for done in repairs.done { print("repaired: \(done)") }
            for left in repairs.left { print("not repaired: \(left)") }
            print(describe(summary, anchorFinding: anchorFinding))
        }
        if !clean { throw ExitCode(1) }
    }

    private func describe(_ summary: ScanSummary, anchorFinding: String?) -> String {
        let checked = summary.counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        let epochs = summary.keyIDs.sorted { $0.key < $1.key }.map { "epoch \($0.key): \($0.value)" }.joined(separator: ", ")
        var lines = ["checked \(checked)", "items by key id: \(epochs.isEmpty ? "none" : epochs)"]
        if summary.keptByRepair > 0 { lines.append("\(summary.keptByRepair) objects kept in epochfs.lost/ by earlier repairs") }
        let problems = summary.problems.count + (anchorFinding == nil ? 0 : 1)
        lines.append(problems == 0 ? "clean" : "\(problems) problems")
        return lines.joined(separator: "\n")
    }
}

/// `[#####-----]  50%  12/24 MiB`.
private func progressBar(_ progress: ScanProgress) -> String {
    let fraction = progress.bytesTotal == 0 ? 1 : min(1, Double(progress.bytesDone) / Double(progress.bytesTotal))
    let filled = Int(fraction * 30)
    return "checking [" + String(repeating: "#", count: filled) + String(repeating: "-", count: 30 - filled) + "] "
        + "\(Int(fraction * 100))%  \(progress.bytesDone >> 20)/\(progress.bytesTotal >> 20) MiB, \(progress.items) items"
}

/// `fsck --json`: one object.
private struct FsckReport: Encodable {
    struct Problem: Encodable {
        let item: String
        let path: String?
        let backingPath: String
        let keyID: Epoch?
        let problem: String

        enum CodingKeys: String, CodingKey {
            case item, path, backingPath = "backing_path", keyID = "key_id", problem
        }
    }

    let clean: Bool
    let problems: [Problem]
    /// What is wrong with the volume's anchor (`--anchor`), or nil.
    let anchor: String?
    let checked: [String: Int]
    let keyIDs: [String: Int]
    let keptByRepair: Int
    let repaired: [String]
    let notRepaired: [String]

    init(_ summary: ScanSummary, anchor: String?, repaired: [String], notRepaired: [String]) {
        clean = summary.isClean && anchor == nil
        self.anchor = anchor
        problems = summary.problems.map {
            Problem(item: $0.kind.label, path: $0.path, backingPath: $0.backingPath, keyID: $0.keyID, problem: "\($0.problem!)")
        }
        checked = summary.counts
        keyIDs = Dictionary(uniqueKeysWithValues: summary.keyIDs.map { ($0.key.description, $0.value) })
        keptByRepair = summary.keptByRepair
        self.repaired = repaired
        self.notRepaired = notRepaired
    }

    enum CodingKeys: String, CodingKey {
        case clean, problems, anchor, checked, keyIDs = "key_ids", keptByRepair = "kept_by_repair", repaired
        case notRepaired = "not_repaired"
    }
}
