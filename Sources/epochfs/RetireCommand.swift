import ArgumentParser
import EpochCheck
import EpochFormat
import EpochHeader
import EpochReconcile
import EpochStore
import EpochVolume
import EpochWAL

struct Retire: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drop the data keys of an old epoch, offline (BACKING) or live (--mount MOUNTPOINT).",
        usage: """
            epochfs retire BACKING EPOCH [--wal DIR ...] [--layout proposal|raw] [--key-source SPEC]
                   epochfs retire --mount MOUNTPOINT EPOCH [--wal DIR ...] [--layout proposal|raw]
            """,
        discussion: """
            Scans the volume first: while any block, symlink target or xattr value (and, when a \
            raft cutover is set, any entry above it in the WAL directories given with --wal, \
            which must then be given) is still sealed under EPOCH, the command is refused (exit \
            3) and says how many items still name it and where. Otherwise one header commit \
            drops the epoch's keys; anything naming it afterwards fails with "retired key id" \
            (EIO on a mount). The active epoch is never retired; retiring a retired epoch \
            writes nothing. A WAL kept inside the volume is read through the mount: retire it \
            live, with --mount and --wal MOUNTPOINT/...; the WAL is checked by this command, \
            the rest by the mount.
            """)

    @OptionGroup var target: EpochTarget

    @Option(name: .customLong("wal"), help: ArgumentHelp("A WAL directory whose entries above the raft cutover to check (repeatable).",
                                                         valueName: "DIR"))
    var walDirectories: [String] = []

    @Option(help: "How the raft envelope sits in the WAL entries: proposal or raw.")
    var layout: PayloadLayout = .proposal

    func validate() throws {
        guard target.epoch > 0 else { throw ValidationError("epoch 0 names no key") }
    }

    func run() throws {
        let epoch = target.epoch
        if let mount = target.mount {
            try runReportingErrors {
                if !walDirectories.isEmpty {
                    let gate = try RaftKeyOptions.parse(["--mount", mount, "--layout", layout.rawValue]).gate()
                    try references(to: epoch, inWAL: walDirectories, gate: gate).requireNone(retiring: epoch)
                }
                try MountControl.send(.retire(epoch, walChecked: !walDirectories.isEmpty), mountpoint: mount)
                print("retired epoch \(epoch) of \(mount)")
            }
            return
        }
        let volume = try target.offlineVolume()
        try runReportingErrors {
            let owner = try volume.claim(for: "retire")
            defer { withExtendedLifetime(owner) {} }
            let tree = try BackingTree(volume: try LiveVolume(backing: volume.backing, journal: try volume.openJournal()), writing: false)
            let walReferences = walDirectories.isEmpty ? nil : { (header: VolumeHeader) in
                let gate = CutoverGate(cutover: header.slot.raftCutover, layout: layout, raftKeys: RaftKeys.lookup(in: header.keyring))
                return try references(to: epoch, inWAL: walDirectories, gate: gate)
            }
            let header = try Retirement.retire(epoch: epoch, in: tree, walReferences: walReferences)
            print("retired epoch \(epoch) (sequence \(header.sequence))")
        }
    }
}

/// The entries of the WAL directories `directories` that `gate` opens (those above its
/// cutover) under `epoch`, as replayed. An entry that does not open stops it, and so the retire.
private func references(to epoch: Epoch, inWAL directories: [String], gate: CutoverGate) throws -> EpochReferences {
    var found = EpochReferences()
    for directory in directories {
        var naming: [UInt64] = []
        _ = try WALReader(directory: directory, gate: gate).read { event in
            switch event {
            case let .entry(entry) where entry.envelopeKeyID == epoch: naming.append(entry.index)
            case let .truncated(from): naming.removeAll { $0 >= from }
            default: break
            }
        }
        for index in naming { found.add("WAL entries", at: "\(directory) entry \(index)") }
    }
    return found
}
