// Writes etcd WAL segments for bench/wal.sh: entries of PAYLOAD plaintext bytes in the proposal
// layout, every one wrapped in a raft envelope under key id 1 (so a reader with cutover 0 opens
// them all), saved 64 entries at a time with a HardState, until the segments hold TOTAL bytes.
// The payload is printable text, as an etcd put of a text key and value would be.
// Usage: epochfs-walgen DIR TOTAL_BYTES PAYLOAD_BYTES RAFT_KEY_FILE (64 hex digits)
import EpochCrypto
import EpochWAL
import Glibc

func fail(_ message: String, exitCode: Int32 = 1) -> Never {
    let bytes = Array("epochfs-walgen: \(message)\n".utf8)
    _ = write(STDERR_FILENO, bytes, bytes.count)
    exit(exitCode)
}

let arguments = CommandLine.arguments
guard arguments.count == 5, let total = Int64(arguments[2]), let payloadSize = Int(arguments[3]), payloadSize > 0 else {
    fail("usage: epochfs-walgen DIR TOTAL_BYTES PAYLOAD_BYTES RAFT_KEY_FILE", exitCode: 64)
}
guard let keyFile = fopen(arguments[4], "r") else { fail("cannot open \(arguments[4])") }
var hexDigits = [UInt8](repeating: 0, count: 64)
let digitCount = fread(&hexDigits, 1, 64, keyFile)
fclose(keyFile)
let keyBytes = digitCount < 64 ? [] : stride(from: 0, to: 64, by: 2).compactMap {
    UInt8(String(decoding: hexDigits[$0..<$0 + 2], as: UTF8.self), radix: 16)
}
guard keyBytes.count == 32 else { fail("\(arguments[4]) must hold 64 hex digits") }

let wrapper = try RaftPayloadWrapper(keyID: 1, raftDEK: AESGCMKey(SecretBytes(copying: keyBytes)))
let writer = try WALWriter(directory: arguments[1], metadata: Array("epochfs-walgen".utf8), options: .init(sync: false))
let text = Array("key/%08d=value-of-the-benchmark-entry-".utf8)
var index: UInt64 = 0
var written: Int64 = 0
while written < total {
    var entries: [RaftEntry] = []
    for _ in 0..<64 {
        index += 1
        var data: [UInt8] = [0x01] + withUnsafeBytes(of: index.bigEndian) { Array($0) }
        data += (0..<payloadSize).map { text[$0 % text.count] }
        entries.append(RaftEntry(term: 1, index: index, data: try wrapper.wrap(data)))
        written += Int64(data.count + 34 + 32) // entry data and about a frame's worth of framing
    }
    try writer.save(hardState: HardState(term: 1, vote: 1, commit: index), entries: entries)
}
try writer.close()
print("\(index) entries in \(writer.segments.count) segments")
