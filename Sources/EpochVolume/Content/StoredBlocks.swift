import EpochFormat
import EpochIO

/// One stored block of a regular file, as a volume scan sees it.
public struct StoredBlock: Sendable {
    public let index: Int
    /// The epoch its envelope names; nil for a hole (all zeros) or a block too damaged to name one.
    public let keyID: UInt32?
    /// Plaintext bytes it holds.
    public let length: Int
    /// Why it does not open; nil when it does.
    public let error: EnvelopeError?
}

extension FileContent {
    /// Visits every stored block of the file open at `fd`, in order: the key id its envelope
    /// names and whether it opens (through `read`, exactly as a read through the mount would).
    /// Throws what stops the whole file from being read (a bad file header, an I/O error).
    public func visitStoredBlocks(fd: FileDescriptor, layout: ContentLayout, io: any BackingIO,
                                  _ visit: (StoredBlock) throws -> Void) throws {
        let size = try self.size(fd: fd)
        let blockSize = layout.blockSize
        for index in 0..<((size + blockSize - 1) / blockSize) {
            let length = min(blockSize, size - index * blockSize)
            let stored = try io.preadFully(fd, count: length + Envelope.overhead, at: layout.backingOffset(block: index))
            let keyID = stored.allSatisfy { $0 == 0 } ? nil : try? stored.withUnsafeBytes { try Envelope.keyID(of: $0) }
            var error: EnvelopeError?
            do {
                _ = try read(fd: fd, offset: index * blockSize, count: length) { $0.count }
            } catch let ContentError.block(_, envelopeError) {
                error = envelopeError
            }
            try visit(StoredBlock(index: index, keyID: keyID, length: length, error: error))
        }
    }
}
