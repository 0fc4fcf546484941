import ArgumentParser
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
    var epoch: UInt32 = 1

    @Option(help: "Plaintext bytes per block: a power of two from 512 to 1048576.")
    var blockSize: UInt32 = 4096

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    func validate() throws {
        guard epoch >= 1 else { throw ValidationError("--epoch must be 1 or more (0 is reserved)") }
        guard blockSize >= 512, blockSize <= 1 << 20, blockSize & (blockSize - 1) == 0 else {
            throw ValidationError("--block-size must be a power of two from 512 to 1048576")
        }
    }

    func run() throws {
        bootstrapLogging(verbose: false)
        try runReportingErrors {
            let header = try Volume.create(backing: backing, keySource: keySource, epoch: epoch, blockSize: blockSize)
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
        abstract: "Change the key to a new epoch (offline), with ZFS change-key semantics.",
        discussion: """
            Fetches the wrapping key of EPOCH, adds fresh data keys for it and commits the keyring \
            resealed under it in one atomic header write. Data blocks are not rewritten. At the \
            current epoch nothing is written (exit 0); below it the command is refused (exit 3).
            """)

    @OptionGroup var volume: VolumeOptions

    @Argument(help: "The new epoch.")
    var epoch: UInt32

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    func run() throws {
        try runReportingErrors {
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

/// `info`'s output: one JSON object, or aligned text for people.
func printHeader(_ header: VolumeHeader, json: Bool) throws {
    let summary = HeaderSummary(header)
    if json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(summary), as: UTF8.self))
        return
    }
    let cutover = summary.raftCutover == .max ? "none (inert)" : String(summary.raftCutover)
    print("""
        volume        \(summary.volumeID)
        epoch         \(summary.epoch)
        sequence      \(summary.sequence) (slot \(summary.headerSlot))
        block size    \(summary.blockSize)
        raft cutover  \(cutover)
        key source    \(summary.keySource) (\(summary.keyDerivation))
        keyring       \(summary.keyring.map { "\($0.epoch) \($0.state)" }.joined(separator: ", "))
        """)
}

struct HeaderSummary: Encodable {
    struct EpochState: Encodable {
        let epoch: UInt32
        let state: String
    }

    let volumeID: String
    let epoch: UInt32
    let sequence: UInt64
    let headerSlot: String
    let blockSize: UInt32
    let raftCutover: UInt64
    let keySource: String
    let keyDerivation: String
    let keyring: [EpochState]

    init(_ header: VolumeHeader) {
        volumeID = header.volumeID.description
        epoch = header.epoch
        sequence = header.sequence
        headerSlot = header.slotIndex == 0 ? "A" : "B"
        blockSize = header.slot.blockSize
        raftCutover = header.slot.raftCutover
        keySource = header.slot.keySource
        keyDerivation = header.slot.keyDerivation == .direct ? "direct" : "scrypt"
        keyring = header.keyring.epochs.map { EpochState(epoch: $0.epoch, state: $0.state.description) }
    }

    enum CodingKeys: String, CodingKey {
        case volumeID = "volume_id", epoch, sequence, headerSlot = "header_slot", blockSize = "block_size"
        case raftCutover = "raft_cutover", keySource = "key_source", keyDerivation = "key_derivation", keyring
    }
}
