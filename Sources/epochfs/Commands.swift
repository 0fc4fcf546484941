import ArgumentParser
import EpochFormat
import EpochHeader
import EpochReconcile
import EpochVolume
import Foundation

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a new volume in an empty (or new) backing directory.",
        discussion: """
            SPEC is file:TEMPLATE (TEMPLATE contains %d, replaced by the epoch; each file holds 32 raw \
            bytes or 64 hex digits), command:CMD (CMD runs through /bin/sh with the epoch as its last \
            argument and prints the key) or passphrase:FILE (scrypt; FILE may contain %d; - reads stdin). \
            The spec is remembered in the volume.
            """)

    @Argument(help: "The backing directory to create the volume in.")
    var backing: String

    @Option(help: ArgumentHelp("Where the wrapping key of each epoch comes from.", valueName: "SPEC"))
    var keySource: String

    @Option(help: "The first key epoch (1 or more).")
    var epoch: Epoch = 1

    @Option(help: "Plaintext bytes per block: a power of two from 512 to 1048576.")
    var blockSize: UInt32 = 4096

    @Option(help: ArgumentHelp(
        "Make the volume a member of raft cluster ID: every member created with the same ID and key source "
            + "derives the same raft key for each epoch (1 to 64 printable ASCII characters, no spaces).",
        valueName: "ID"))
    var clusterID: String?

    @Option(help: ArgumentHelp(
        "The mode of the backing directory, which is the mount's root (octal, e.g. 755 or 1777); "
            + "default: as mkdir makes it, 0777 less the umask, or an existing directory's own.",
        valueName: "MODE"))
    var mode: String?

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    /// `--mode` as a mode; nil when not given.
    var rootMode: mode_t? {
        mode.flatMap { mode_t($0, radix: 8) }
    }

    func validate() throws {
        if let mode, mode_t(mode, radix: 8).map({ $0 > 0o7777 }) ?? true {
            throw ValidationError("--mode must be an octal mode from 0 to 7777")
        }
        guard epoch >= 1 else { throw ValidationError("--epoch must be 1 or more (0 is reserved)") }
        guard blockSize >= 512, blockSize <= 1 << 20, blockSize & (blockSize - 1) == 0 else {
            throw ValidationError("--block-size must be a power of two from 512 to 1048576")
        }
        if let clusterID {
            do { _ = try ClusterID(clusterID) } catch { throw ValidationError("--cluster-id: \(error)") }
        }
    }

    func run() throws {
        bootstrapLogging(verbose: false)
        try runReportingErrors {
            let header = try Volume.create(backing: backing, keySource: keySource, epoch: epoch, blockSize: blockSize,
                                           clusterID: try clusterID.map { try ClusterID($0) }, rootMode: rootMode)
            try printHeader(header, json: json)
        }
    }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Open a volume and show its header: epoch, sequence, keyring states.")

    @OptionGroup var volume: VolumeOptions

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        try runReportingErrors {
            try printHeader(try volume.openJournal().open(), json: json)
        }
    }
}

struct Rekey: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change the key to a new epoch, offline (BACKING) or live (--mount MOUNTPOINT).",
        usage: "epochfs rekey BACKING EPOCH [--key-source SPEC] [--json]\n       epochfs rekey --mount MOUNTPOINT EPOCH",
        discussion: """
            ZFS change-key semantics: fetches the wrapping key of EPOCH, adds fresh data keys for it \
            and commits the keyring resealed under it in one atomic header write. Data blocks are \
            not rewritten. At the current epoch nothing is written (exit 0); below it the command \
            is refused (exit 3). With --mount the command goes through the mount's control file \
            and returns once the rekey is durable; new blocks then carry the new epoch.
            """)

    @OptionGroup var target: EpochTarget

    @Flag(help: "Print the resulting header as one JSON object (offline only).")
    var json = false

    func validate() throws {
        if json && target.mount != nil {
            throw ValidationError("--json is for an offline rekey; for a mount, read `epochfs status MOUNTPOINT --json` afterwards")
        }
    }

    func run() throws {
        let epoch = target.epoch
        if let mount = target.mount {
            try runReportingErrors {
                try MountControl.send(.rekey(epoch), mountpoint: mount)
                print("rekeyed \(mount) to epoch \(epoch)")
            }
            return
        }
        let volume = try target.offlineVolume()
        try runReportingErrors {
            let owner = try volume.claim(for: "rekey")
            defer { withExtendedLifetime(owner) {} }
            let result = try volume.openJournal().rekey(to: epoch)
            if json {
                try printHeader(result.header, json: true)
            } else if case let .rekeyed(from, header) = result {
                print("rekeyed from epoch \(from) to \(header.epoch) (sequence \(header.sequence))")
            } else {
                print("already at epoch \(epoch); nothing written")
            }
        }
    }
}

/// An epoch of a volume offline (`BACKING EPOCH [--key-source SPEC]`) or of a mounted one
/// (`--mount MOUNTPOINT EPOCH`, through its control file): what `rekey` and `retire` take.
struct EpochTarget: ParsableArguments {
    @Option(help: ArgumentHelp("Act on this mounted volume through its control file.", valueName: "MOUNTPOINT"))
    var mount: String?

    @Argument(help: "BACKING and EPOCH, or just EPOCH with --mount.")
    var arguments: [String]

    @Option(help: ArgumentHelp("Key source, overriding the one remembered in the volume.", valueName: "SPEC"))
    var keySource: String?

    func validate() throws {
        guard arguments.count == (mount == nil ? 2 : 1), let last = arguments.last else {
            throw ValidationError(mount == nil ? "expected BACKING EPOCH" : "expected EPOCH after --mount MOUNTPOINT")
        }
        guard Epoch(parsing: last) != nil else { throw ValidationError("EPOCH must be a number from 1 to 4294967295, not '\(last)'") }
    }

    var epoch: Epoch { Epoch(parsing: arguments.last!)! }

    /// The volume named offline, with the key source override.
    func offlineVolume() throws -> VolumeOptions {
        try VolumeOptions.parse([arguments[0]] + (keySource.map { ["--key-source", $0] } ?? []))
    }
}

/// `info`'s output: one JSON object, or aligned text for people.
func printHeader(_ header: VolumeHeader, json: Bool) throws {
    let status = VolumeStatus(header)
    if json {
        print(try jsonLine(status))
        return
    }
    let cutover = status.raftCutover == .max ? "none (inert)" : String(status.raftCutover)
    print("""
        volume        \(status.volumeID)
        format        \(status.formatVersion)
        epoch         \(status.epoch)
        sequence      \(status.sequence) (slot \(status.headerSlot))
        block size    \(status.blockSize)
        raft cutover  \(cutover)
        key source    \(status.keySource) (\(status.keyDerivation))
        cluster id    \(status.clusterID ?? "none (random raft keys)")
        keyring       \(status.keyring.map { "\($0.epoch) \($0.state)" }.joined(separator: ", "))
        """)
}

func jsonLine(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// `init --epoch`: read as every epoch named in text is.
extension Epoch: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
}
