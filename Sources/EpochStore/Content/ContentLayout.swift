import EpochFormat

/// Where a regular file's plaintext bytes live in its backing file (docs/FORMAT.md §6).
///
/// Format 3: two shadow slots, the 512-byte file record (`FileRecord`: the file id and what
/// the last commit found durable) at the next multiple of 512, then one storage envelope per
/// block of `blockSize` plaintext bytes, every block full except the last. A slot holds a
/// second copy of one block while that block is rewritten in place, so a power cut that tears
/// the block leaves the copy. The slots are holes until first used, so they cost no disk space;
/// the record shares its page with block 0.
/// Formats 2 and 1 (volumes made before, read offline): the 18-byte file header in place of the
/// record, right after the slots (2) or with no slots (1).
public struct ContentLayout: Sendable {
    public static let headerSize = 18
    /// A slot: `block_index (BE64) ‖ envelope length (BE16) ‖ supersedes (12) ‖ 10 zero bytes ‖ envelope`.
    static let slotHeaderSize = 32
    /// Where an envelope keeps its nonce (docs/FORMAT.md §2.1). A slot names the copy in place
    /// that its own copy is newer than by that copy's nonce.
    static let nonceRange = 6..<Envelope.headerSize
    /// The unit a disk writes whole: a torn write reached it for some sectors and not others.
    static let sectorSize = 512

    public let blockSize: Int
    /// The volume's format version (docs/FORMAT.md §3.1), which is also the file header's.
    public let version: UInt16
    var sealedBlockSize: Int { blockSize + Envelope.overhead }
    public var slotCount: Int { version >= 2 ? 2 : 0 }
    public var slotSize: Int { Self.slotHeaderSize + sealedBlockSize }
    /// Format 3 keeps the file id in an authenticated record, not in a header.
    var hasRecord: Bool { version >= FileRecord.version }
    /// Offset and size of what names the file id: the record (aligned to 512 bytes, so that
    /// one write of it is atomic on the disk), or the file header.
    var headerOffset: Int {
        hasRecord ? (slotOffset(slotCount) + FileRecord.size - 1) / FileRecord.size * FileRecord.size : slotOffset(slotCount)
    }
    var headerLength: Int { hasRecord ? FileRecord.size : Self.headerSize }
    /// Offset of block 0.
    public var dataOffset: Int { headerOffset + headerLength }

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
    func slotOffset(_ slot: Int) -> Int { slot * slotSize }

    /// A slot's header: `block_index (BE64) ‖ envelope length (BE16) ‖ supersedes ‖ 10 zero
    /// bytes`, `supersedes` the nonce of the copy in place when the slot's copy was written.
    func slotHeader(block: Int, length: Int, supersedes: [UInt8]) -> [UInt8] {
        var writer = ByteWriter(capacity: Self.slotHeaderSize)
        writer.append(UInt64(block))
        writer.append(UInt16(length))
        writer.append(contentsOf: supersedes)
        writer.appendZeros(Self.slotHeaderSize - writer.bytes.count)
        return writer.bytes
    }

    /// What a slot header names; nil for an empty slot (all zeros) or a malformed one.
    func slotHeader(_ bytes: [UInt8]) -> (block: Int, length: Int, supersedes: [UInt8])? {
        var reader = ByteReader(bytes[...], what: "shadow slot")
        let reserved = 10 + Self.nonceRange.count
        guard bytes.count == Self.slotHeaderSize, bytes[reserved...].allSatisfy({ $0 == 0 }),
              let block = try? reader.readUInt64(), let length = (try? reader.readUInt16()).map(Int.init),
              length > Envelope.overhead, length <= sealedBlockSize, block < UInt64(Int.max / sealedBlockSize) else { return nil }
        return (Int(block), length, Array(bytes[10..<reserved]))
    }

    /// `version(BE16) ‖ file_id(16)`, the file header of formats 1 and 2.
    public func header(fileID: FileID) -> [UInt8] {
        var writer = ByteWriter(capacity: Self.headerSize)
        writer.append(version)
        writer.append(contentsOf: fileID.bytes)
        return writer.bytes
    }
}
