import EpochFormat

/// Where a regular file's plaintext bytes live in its backing file (docs/FORMAT.md §6).
///
/// Format 2: two shadow slots, the 18-byte file header, then one storage envelope per block of
/// `blockSize` plaintext bytes, every block full except the last. A slot holds a second copy
/// of one block while that block is rewritten in place, so a power cut that tears the block
/// leaves the copy. The slots are holes until first used, so they cost no disk space.
/// Format 1 (volumes made before): no slots, the header at offset 0.
public struct ContentLayout: Sendable {
    public static let headerSize = 18
    /// A slot: `block_index (BE64) ‖ envelope length (BE16) ‖ state (1) ‖ 5 zero bytes ‖ envelope`.
    public static let slotHeaderSize = 16

    public let blockSize: Int
    /// The volume's format version (docs/FORMAT.md §3.1), which is also the file header's.
    public let version: UInt16
    public var sealedBlockSize: Int { blockSize + Envelope.overhead }
    public var slotCount: Int { version >= 2 ? 2 : 0 }
    public var slotSize: Int { Self.slotHeaderSize + sealedBlockSize }
    /// Offset of the file header.
    public var headerOffset: Int { slotCount * slotSize }
    /// Offset of block 0.
    public var dataOffset: Int { headerOffset + Self.headerSize }

    public init(blockSize: Int, version: UInt16 = HeaderSlot.formatVersion) {
        self.blockSize = blockSize
        self.version = version
    }

    /// The plaintext size of a backing file of `backingSize` bytes. A trailing fragment too
    /// short to hold an envelope (a torn append) adds nothing.
    public func plaintextSize(backingSize: Int) -> Int {
        guard backingSize > dataOffset else { return 0 }
        let body = backingSize - dataOffset
        let fullBlocks = body / sealedBlockSize
        let tail = body % sealedBlockSize
        return fullBlocks * blockSize + max(0, tail - Envelope.overhead)
    }

    /// The backing size that holds exactly `plaintextSize` bytes.
    public func backingSize(plaintextSize: Int) -> Int {
        guard plaintextSize > 0 else { return 0 }
        let fullBlocks = plaintextSize / blockSize
        let tail = plaintextSize % blockSize
        return dataOffset + fullBlocks * sealedBlockSize + (tail > 0 ? tail + Envelope.overhead : 0)
    }

    /// Offset of block `index` in the backing file.
    public func backingOffset(block index: Int) -> Int { dataOffset + index * sealedBlockSize }

    /// Offset of shadow slot `slot` (0 or 1).
    public func slotOffset(_ slot: Int) -> Int { slot * slotSize }

    /// Offset of the state byte in a slot header: 1 while the slot holds its block's current
    /// copy, 0 when the copy in place is current (the slot's is a fallback).
    public static let slotStateOffset = 10

    /// A slot's header: `block_index (BE64) ‖ envelope length (BE16) ‖ state ‖ 5 zero bytes`.
    public func slotHeader(block: Int, length: Int, current: Bool) -> [UInt8] {
        var writer = ByteWriter(capacity: Self.slotHeaderSize)
        writer.append(UInt64(block))
        writer.append(UInt16(length))
        writer.append(UInt8(current ? 1 : 0))
        writer.appendZeros(5)
        return writer.bytes
    }

    /// What a slot header names; nil for an empty slot (all zeros) or a malformed one.
    public func slotHeader(_ bytes: [UInt8]) -> (block: Int, length: Int, current: Bool)? {
        var reader = ByteReader(bytes[...], what: "shadow slot")
        guard bytes.count == Self.slotHeaderSize, bytes[(Self.slotStateOffset + 1)...].allSatisfy({ $0 == 0 }),
              let block = try? reader.readUInt64(), let length = (try? reader.readUInt16()).map(Int.init),
              let state = try? reader.readUInt8(), state <= 1,
              length > Envelope.overhead, length <= sealedBlockSize, block < UInt64(Int.max / sealedBlockSize) else { return nil }
        return (Int(block), length, state == 1)
    }

    /// `version(BE16) ‖ file_id(16)`.
    public func header(fileID: FileID) -> [UInt8] {
        var writer = ByteWriter(capacity: Self.headerSize)
        writer.append(version)
        writer.append(contentsOf: fileID.bytes)
        return writer.bytes
    }
}
