import ArgumentParser
import EpochCrypto
import EpochFormat
import EpochHeader
import EpochReconcile
import EpochSystem
import EpochVolume
import EpochWAL
import Foundation

struct WAL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal",
        abstract: "Read a directory of etcd WAL segments: dump its entries or verify it.",
        discussion: """
            Entries above the raft cutover carry raft envelopes and are opened with the raft key \
            their key id names. Keys come from a mounted volume (--mount), a backing directory \
            (--backing, with its remembered key source or --key-source), or raw key files \
            (--raft-key ID:FILE, repeatable; 32 raw bytes or 64 hex digits). The cutover is the \
            volume's unless --cutover is given; with raw key files only, it is inert (2^64-1) \
            unless --cutover is given. Key material is never printed.
            """,
        subcommands: [Dump.self, Verify.self])

    struct Dump: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the entries of the log, one per line, in log order.",
            discussion: """
                Text: `INDEX TERM TYPE DATA`, DATA with printable ASCII kept and every other byte \
                (and the backslash) as \\xNN. --json: one object per line, {"index", "term", \
                "type", "data"} with data in base64, plus "key_id" (and "request_id" in the \
                proposal layout) for an entry whose raft envelope was opened. Opened entries show \
                their plaintext. When a later entry replaces earlier ones (a raft leader \
                overwrote the log), a line `truncated FROM` (JSON {"truncated_from": FROM}) says \
                that entries from index FROM on, as printed so far, are replaced by what follows.
                """)

        @Argument(help: "The WAL directory (e.g. DATA_DIR/member/wal).")
        var directory: String

        @OptionGroup var keys: RaftKeyOptions

        @Flag(help: "One JSON object per entry.")
        var json = false

        func run() throws {
            try runReportingErrors {
                let gate = try keys.gate()
                let json = json // the property wrapper's getter costs a metadata lookup per entry
                let output = OutputBuffer()
                defer { output.flush() }
                let summary = try WALReader(directory: directory, gate: gate).read { event in
                    switch event {
                    case let .entry(entry):
                        json ? output.appendJSON(entry) : output.appendText(entry)
                    case let .truncated(from):
                        output.append(json ? "{\"truncated_from\":\(from)}\n" : "truncated \(from)\n")
                    case .metadata, .hardState, .snapshot:
                        break
                    }
                }
                if case .torn = summary.end {
                    output.flush()
                    printError("epochfs: \(summary.end) (ignored, as etcd ignores it)")
                }
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read the whole log, checking frames, CRCs and every raft envelope above the cutover.",
            discussion: """
                Prints a summary and exits 0, or names the segment, offset and entry index of the \
                first error and exits non-zero. A torn tail in the last segment is not an error \
                (etcd ignores it too); the summary says where it is.
                """)

        @Argument(help: "The WAL directory (e.g. DATA_DIR/member/wal).")
        var directory: String

        @OptionGroup var keys: RaftKeyOptions

        func run() throws {
            try runReportingErrors {
                let gate = try keys.gate()
                let summary = try WALReader(directory: directory, gate: gate).verify()
                printSummary(summary, gate: gate)
            }
        }

        private func printSummary(_ summary: WALSummary, gate: CutoverGate) {
            let range = summary.firstIndex.map { "\($0)...\(summary.lastIndex!)" } ?? "none"
            let state = summary.hardState.map { "term \($0.term), vote \($0.vote), commit \($0.commit)" } ?? "none"
            let cutover = gate.cutover == .max ? "none (inert)" : String(gate.cutover)
            print("""
                segments    \(summary.segments.count) (\(summary.segments.first!) ... \(summary.segments.last!))
                records     \(summary.records) (\(summary.bytes) bytes)
                entries     \(summary.entries) (index \(range); \(summary.entryRecords) entry records, \
                \(summary.replacedEntries) replaced)
                unwrapped   \(summary.unwrappedEntries) (cutover \(cutover), layout \(gate.layout.rawValue))
                hard state  \(state)
                crc         0x\(String(summary.crc, radix: 16)) (\(CRC32C.usesHardware ? "SSE4.2" : "table"))
                end         \(summary.end)
                ok
                """)
        }
    }
}

extension PayloadLayout: ExpressibleByArgument {}

/// Where the raft keys and the cutover come from (one key source at most).
struct RaftKeyOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Take raft keys and cutover from this mounted volume.", valueName: "MOUNTPOINT"))
    var mount: String?

    @Option(help: ArgumentHelp("Take raft keys and cutover from this volume's backing directory.", valueName: "BACKING"))
    var backing: String?

    @Option(help: ArgumentHelp("Key source for --backing, overriding the one remembered in the volume.", valueName: "SPEC"))
    var keySource: String?

    @Option(name: .customLong("raft-key"),
            help: ArgumentHelp("A raft key file and the key id (epoch) it opens (repeatable).", valueName: "ID:FILE"))
    var raftKeys: [String] = []

    @Option(help: "Unwrap entries with an index above N (default: the volume's cutover, else none).")
    var cutover: UInt64?

    @Option(help: "How the raft envelope sits in the entry data: proposal (9-byte clear header) or raw.")
    var layout: PayloadLayout = .proposal

    func validate() throws {
        let sources = [mount != nil, backing != nil, !raftKeys.isEmpty].filter { $0 }.count
        guard sources <= 1 else { throw ValidationError("give at most one of --mount, --backing and --raft-key") }
        if keySource != nil, backing == nil { throw ValidationError("--key-source goes with --backing") }
        for spec in raftKeys { _ = try RawRaftKey(spec) }
    }

    /// The gate for the chosen keys: the volume's cutover unless --cutover overrides it.
    func gate() throws -> CutoverGate {
        let (volumeCutover, lookup) = try keysAndCutover()
        return CutoverGate(cutover: cutover ?? volumeCutover ?? .max, layout: layout, raftKeys: lookup)
    }

    private func keysAndCutover() throws -> (UInt64?, EnvelopeKeyLookup?) {
        if let mount {
            let status = try MountControl.status(mountpoint: mount)
            let header = try Volume.journal(backing: try backingDirectory(ofMount: mount)).open()
            guard header.volumeID.description == status.volumeID else {
                throw CLIError("\(mount) serves volume \(status.volumeID), but its backing directory holds \(header.volumeID)")
            }
            return (status.raftCutover, RaftKeys.lookup(in: header.keyring))
        }
        if let backing {
            let header = try Volume.journal(backing: backing, keySourceOverride: keySource).open()
            return (header.slot.raftCutover, RaftKeys.lookup(in: header.keyring))
        }
        guard !raftKeys.isEmpty else { return (nil, nil) }
        var keys: [Epoch: AESGCMKey] = [:]
        for spec in raftKeys {
            let key = try RawRaftKey(spec)
            guard keys[key.keyID] == nil else { throw ValidationError("--raft-key gives key id \(key.keyID) twice") }
            keys[key.keyID] = try key.read()
        }
        return (nil, RaftKeys.lookup(keys))
    }
}

/// `--raft-key ID:FILE`.
private struct RawRaftKey {
    let keyID: Epoch
    let path: String

    init(_ spec: String) throws {
        guard let colon = spec.firstIndex(of: ":"), let keyID = Epoch(parsing: spec[..<colon]), keyID != 0,
              spec.index(after: colon) < spec.endIndex else {
            throw ValidationError("--raft-key expects ID:FILE with ID from 1 to 4294967295, got '\(spec)'")
        }
        self.keyID = keyID
        path = String(spec[spec.index(after: colon)...])
    }

    /// The key; a file that holds none is named with the format it should have.
    func read() throws -> AESGCMKey {
        do {
            return try RaftKeys.readKeyFile(path)
        } catch is KeyMaterialError {
            throw CLIError("raft key file \(path): expected 32 raw bytes or 64 hex digits")
        }
    }
}

/// The backing directory of an epochfs mount: the mount source `epochfs:BACKING` of the mount
/// in view at the mount point.
private func backingDirectory(ofMount mountpoint: String) throws -> String {
    let target = URL(fileURLWithPath: mountpoint).resolvingSymlinksInPath().path
    guard let mounts = try? MountTable.read() else { throw CLIError("/proc/self/mountinfo: not readable") }
    guard let source = mounts.last(where: { $0.mountPoint == target })?.source, source.hasPrefix("epochfs:") else {
        throw CLIError("\(mountpoint) is not an epochfs mount (no mount source epochfs:BACKING in /proc/self/mountinfo)")
    }
    return String(source.dropFirst("epochfs:".count))
}
