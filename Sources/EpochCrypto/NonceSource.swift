import Synchronization

/// Random 96-bit GCM nonces from OpenSSL's CSPRNG. Asking `RAND_bytes` for 12 bytes per block
/// costs about as much as encrypting a 4 KiB block, so nonces are cut from a 4 KiB batch that
/// is refilled when used up. Every nonce is still fresh CSPRNG output, used once.
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
            batch.bytes.withUnsafeBytes { source in
                nonce.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[batch.used..<batch.used + nonce.count]))
                // Erase what was handed out so no later reader of this memory sees a used nonce twice.
                UnsafeMutableRawBufferPointer(mutating: UnsafeRawBufferPointer(rebasing: source[batch.used..<batch.used + nonce.count]))
                    .initializeMemory(as: UInt8.self, repeating: 0)
            }
            batch.used += nonce.count
        }
    }
}
