import EpochCrypto
import EpochFormat
import Glibc
import Support
@testable import EpochWAL

func readFile(_ path: String) -> [UInt8] {
    let descriptor = open(path, O_RDONLY)
    precondition(descriptor >= 0, "cannot open \(path)")
    defer { close(descriptor) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress!, $0.count) }
        precondition(count >= 0)
        if count == 0 { return bytes }
        bytes += chunk[0..<count]
    }
}

func writeFile(_ path: String, _ bytes: [UInt8]) {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    precondition(descriptor >= 0, "cannot create \(path)")
    defer { close(descriptor) }
    let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    precondition(written == bytes.count)
}

/// Rewrites one byte of a file in place.
func patchFile(_ path: String, at offset: Int, _ transform: (UInt8) -> UInt8) {
    var bytes = readFile(path)
    bytes[offset] = transform(bytes[offset])
    writeFile(path, bytes)
}

func fileSize(_ path: String) -> Int { readFile(path).count }


func aesKey(_ hexKey: String) -> AESGCMKey { try! AESGCMKey(SecretBytes(copying: hex(hexKey))) }

/// docs/FORMAT.md §10.1 inputs.
enum KnownAnswer {
    static let raftDEK7 = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    static let nonce = hex("a0a1a2a3a4a5a6a7a8a9aaab")
    static let plaintext = Array(#"{"op":"put","key":"k1","value":"v1"}"#.utf8)
    static let rawEnvelope = hex("010000000007a0a1a2a3a4a5a6a7a8a9aaab051ecb44e6eda2dad45c8f96043613dfb345e36c0d960a0079f3a78cb64495da69641fc9d15938807e54a5a991dd0cbc04035b91")
    static let proposalData = hex("010000000000007a69010000000007a0a1a2a3a4a5a6a7a8a9aaab051ecb44e6eda2dad45c8f96043613dfb345e36c0d960a0079f3a78cb64495da69641fc9d15938807e54a5a991dd0cbc04035b91")
}

/// A raft key ring for tests: key ids to keys, some of them retired; counts lookups.
final class TestRaftKeys: @unchecked Sendable {
    var keys: [Epoch: AESGCMKey] = [:]
    var retired: Set<Epoch> = []
    private(set) var lookups = 0

    init(_ keys: [Epoch: AESGCMKey] = [:]) { self.keys = keys }

    func lookup(_ keyID: Epoch) throws -> AESGCMKey {
        lookups += 1
        if retired.contains(keyID) { throw EnvelopeError.retiredKey(keyID) }
        guard let key = keys[keyID] else { throw EnvelopeError.unknownKeyID(keyID) }
        return key
    }
}

/// `0x01 ‖ request id BE64 ‖ payload`.
func proposal(requestID: UInt64, _ payload: [UInt8]) -> [UInt8] {
    var writer = ByteWriter()
    writer.append(ProposalHeader.version)
    writer.append(requestID)
    writer.append(contentsOf: payload)
    return writer.bytes
}

/// Everything a read delivered, with entries copied out.
struct ReadLog {
    var metadata: [[UInt8]] = []
    var entries: [RaftEntry] = []
    var events: [String] = []
    var hardStates: [HardState] = []
    var keyIDs: [UInt64: Epoch] = [:]
    var requestIDs: [UInt64: UInt64] = [:]

    /// The log after replay, as etcd's ReadAll would return it.
    var replayed: [RaftEntry] = []
}

func readAll(_ directory: String, gate: CutoverGate = CutoverGate(), chunkSize: Int = WALReader.defaultChunkSize)
    -> (ReadLog, Result<WALSummary, any Error>) {
    var log = ReadLog()
    let result = Result {
        try WALReader(directory: directory, gate: gate, chunkSize: chunkSize).read { event in
            switch event {
            case let .metadata(bytes):
                log.metadata.append(bytes)
                log.events.append("metadata")
            case let .entry(entry):
                let copy = entry.copied()
                log.entries.append(copy)
                log.replayed.append(copy)
                log.keyIDs[entry.index] = entry.envelopeKeyID
                log.requestIDs[entry.index] = entry.proposalRequestID
                log.events.append("entry \(entry.index)")
            case let .truncated(from):
                log.replayed.removeAll { $0.index >= from }
                log.events.append("truncated \(from)")
            case let .hardState(state):
                log.hardStates.append(state)
                log.events.append("state \(state.commit)")
            case let .snapshot(snapshot):
                log.events.append("snapshot \(snapshot.index)")
            }
        }
    }
    return (log, result)
}

/// Entries 1...count with distinct payloads, term 1.
func sampleEntries(_ range: ClosedRange<UInt64>, term: UInt64 = 1, size: Int = 40) -> [RaftEntry] {
    range.map { index in
        RaftEntry(term: term, index: index, data: Array("entry \(index) ".utf8) + [UInt8](repeating: UInt8(index & 0xff), count: size))
    }
}

let testMetadata = Array("node 1 cluster 7".utf8)
