// Seal and open throughput of storage envelopes on one thread, as the mount does them: a
// fresh random nonce and a fresh 47-byte AAD per block, one cached file key.
// Usage: epochfs-bench [SECONDS] [BLOCK-SIZE]   (defaults 3 and 4096)
// Prints one line per figure: "<name> <MB/s>" (MB = 10^6 bytes, as `openssl speed` counts).
import EpochCrypto
import EpochFormat
import Glibc

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

let seconds = CommandLine.arguments.count > 1 ? Double(CommandLine.arguments[1]) ?? 3 : 3
let blockSize = CommandLine.arguments.count > 2 ? Int(CommandLine.arguments[2]) ?? 4096 : 4096
let volumeID = try VolumeID.random()
let fileID = try FileID.random()
let fileKey = try AESGCMKey(StorageEnvelope.fileKey(storageDEK: try SecretBytes.random(count: 32), volumeID: volumeID, fileID: fileID))
let plaintext = try SecureRandom.bytes(blockSize)
var envelope = [UInt8](repeating: 0, count: blockSize + Envelope.overhead)
var opened = [UInt8](repeating: 0, count: blockSize)

/// Runs `body` on block indexes until `seconds` pass; returns MB/s of plaintext.
func measure(_ body: (UInt64) throws -> Void) rethrows -> Double {
    var blocks: UInt64 = 0
    let start = now()
    var elapsed = 0.0
    repeat {
        for _ in 0..<1024 {
            try body(blocks)
            blocks += 1
        }
        elapsed = now() - start
    } while elapsed < seconds
    return Double(blocks) * Double(blockSize) / elapsed / 1e6
}

let sealRate = try measure { index in
    let location = BlockLocation(volumeID: volumeID, fileID: fileID, blockIndex: index & 0xff)
    try plaintext.withUnsafeBytes { p in
        try StorageEnvelope.aad(keyID: 1, location: location).withUnsafeBytes { a in
            try envelope.withUnsafeMutableBytes { e in
                try Envelope.seal(plaintext: p, keyID: 1, key: fileKey, aad: a, into: e)
            }
        }
    }
}

// Open the same envelope at its own location each time: the full authenticate-and-decrypt path.
let fixed = BlockLocation(volumeID: volumeID, fileID: fileID, blockIndex: 0)
envelope = try StorageEnvelope.seal(plaintext, keyID: 1, fileKey: fileKey, location: fixed)
let lookup: EnvelopeKeyLookup = { _ in fileKey }
let openRate = try measure { _ in
    try envelope.withUnsafeBytes { e in
        try opened.withUnsafeMutableBytes { o in
            try Envelope.open(e, lookup: lookup, aad: { StorageEnvelope.aad(keyID: $0, location: fixed) }, into: o)
        }
    }
}
precondition(opened == plaintext, "open returned the wrong bytes")

print("seal_mbps \(String(Int(sealRate)))")
print("open_mbps \(String(Int(openRate)))")
