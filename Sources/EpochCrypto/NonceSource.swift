import Synchronization

/// Random 96-bit GCM nonces from OpenSSL's CSPRNG. One `RAND_bytes` call per block costs
/// about as much as sealing the 4 KiB block itself (bench/crypto.sh: seal at 0.60 of
/// `openssl speed` that way, 0.99 batched), so nonces are cut from a 4 KiB batch of CSPRNG
/// output that is refilled when used up. Each byte of a batch is handed out once.
public enum NonceSource {
    private static let batchSize = 4096
    private static let state = Mutex(Batch())

    private struct Batch: ~Copyable {
        var bytes = [UInt8](repeating: 0, count: NonceSource.batchSize)
        var used = NonceSource.batchSize
    }

    public static func fill(_ nonce: UnsafeMutableRawBufferPointer) throws {
        precondition(nonce.count <= batchSize)
        try state.withLock { batch in
            if batch.used + nonce.count > batchSize {
                try batch.bytes.withUnsafeMutableBytes { try SecureRandom.fill($0) }
                batch.used = 0
            }
            let range = batch.used..<batch.used + nonce.count
            batch.bytes.withUnsafeBytes { nonce.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[range])) }
            batch.used = range.upperBound
        }
    }
}
