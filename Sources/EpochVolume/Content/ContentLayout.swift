import EpochFormat

/// Where a regular file's plaintext bytes live in its backing file (docs/FORMAT.md §6):
/// an 18-byte file header, then one storage envelope per block of `blockSize` plaintext bytes,
/// every block full except the last.
public struct ContentLayout: Sendable {
    public static let headerSize = 18
    public static let headerVersion: UInt16 = 1

    public let blockSize: Int
    public var sealedBlockSize: Int { blockSize + Envelope.overhead }

    public init(blockSize: Int) { self.blockSize = blockSize }

    /// The plaintext size of a backing file of `backingSize` bytes. A trailing fragment too
    /// short to hold an envelope (a torn append) adds nothing.
    public func plaintextSize(backingSize: Int) -> Int {
        guard backingSize > Self.headerSize else { return 0 }
        let body = backingSize - Self.headerSize
        let fullBlocks = body / sealedBlockSize
        let tail = body % sealedBlockSize
        return fullBlocks * blockSize + max(0, tail - Envelope.overhead)
    }

    /// The backing size that holds exactly `plaintextSize` bytes.
    public func backingSize(plaintextSize: Int) -> Int {
        guard plaintextSize > 0 else { return 0 }
        let fullBlocks = plaintextSize / blockSize
        let tail = plaintextSize % blockSize
        return Self.headerSize + fullBlocks * sealedBlockSize + (tail > 0 ? tail + Envelope.overhead : 0)
    }

    /// Offset of block `index` in the backing file.
    public func backingOffset(block index: Int) -> Int { Self.headerSize + index * sealedBlockSize }

    /// `version(BE16) ‖ file_id(16)`.
    public static func header(fileID: FileID) -> [UInt8] {
        var writer = ByteWriter(capacity: headerSize)
        writer.append(headerVersion)
        writer.append(contentsOf: fileID.bytes)
        return writer.bytes
    }
}
