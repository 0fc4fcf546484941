import EpochCrypto

/// The authenticated record at offset 0 of every format-3 backing file (docs/FORMAT.md §6.2):
/// the file's id, and what the file's last commit found durable, which no change to the
/// backing file may take away without an error: its size, how many leading blocks hold data
/// (none is a hole), and which shadow slots hold the current copy of a block.
///
/// A commit follows a completed fsync or fdatasync and names only what that sync made durable,
/// so no state a power cut can leave ever contradicts the record on disk.
public struct FileRecord: Equatable, Sendable {
    public static let size = 512
    public static let version: UInt16 = 3
    /// Shadow slots a record can name (docs/FORMAT.md §6).
    public static let slotCount = 2
    static let claimSize = 40
    static let claimsOffset = 44
    /// Where the attribute binding is (format 5; zeros before).
    static let attributesOffset = claimsOffset + slotCount * claimSize
    static let nonceOffset = size - AESGCMKey.nonceSize - AESGCMKey.tagSize
    static let keyLabel = Array("epochfs/v3/record".utf8)

    /// What a commit found about a block that has a copy in a shadow slot, so that no change to
    /// the backing file can make another copy of it current.
    public enum SlotClaim: Equatable, Sendable {
        /// The slot's copy, the one of nonce `copyNonce`, was current: while the copy in place
        /// still has the nonce `supersedes`, the block is that slot copy, or it is an error.
        case inSlot(block: Int, copyNonce: [UInt8], supersedes: [UInt8])
        /// The copy in place, of nonce `nonce`, was current, and the slot held an older one, of
        /// nonce `olderCopy` (zeros in records of earlier versions): while the copy in place has
        /// that nonce, it is the block, or it is an error; and whatever the copy in place has
        /// become, that older slot copy is never the block.
        case inPlace(block: Int, nonce: [UInt8], olderCopy: [UInt8])

        public var block: Int {
            switch self {
            case let .inSlot(block, _, _), let .inPlace(block, _, _): block
            }
        }
    }

    public var fileID: FileID
    /// 1 when the file's first block was written; +1 on every commit.
    public var sequence: UInt64
    /// Plaintext bytes the commit found durable: a backing file that now holds fewer is cut.
    public var committedSize: Int
    /// Blocks [0, denseBlocks) held data at the commit: an all-zero one is not a hole.
    public var denseBlocks: Int
    /// One per shadow slot.
    public var slots: [SlotClaim?]
    /// The file's extended attributes (format 5; unbound in records of earlier formats).
    public var attributes: AttributeBinding

    public init(fileID: FileID, sequence: UInt64 = 1, committedSize: Int = 0, denseBlocks: Int = 0,
                slots: [SlotClaim?] = Array(repeating: nil, count: FileRecord.slotCount),
                attributes: AttributeBinding = .unbound) {
        self.fileID = fileID
        self.sequence = sequence
        self.committedSize = committedSize
        self.denseBlocks = denseBlocks
        self.slots = slots
        self.attributes = attributes
    }

    /// The key of every record of a volume: records never change with the epoch, so a rekey or
    /// a retire leaves them as they are.
    public static func key(nameKey: SecretBytes, volumeID: VolumeID) throws -> AESGCMKey {
        try AESGCMKey(HKDF.sha256(key: nameKey, salt: volumeID.bytes, info: keyLabel, count: AESGCMKey.keySize))
    }

    /// The 512 bytes: the fields, zeros, a fresh nonce, and the GCM tag over everything before
    /// the nonce (no plaintext).
    public func encoded(key: AESGCMKey, nonce: [UInt8]? = nil) throws -> [UInt8] {
        var writer = ByteWriter(capacity: Self.size)
        writer.append(Self.version)
        writer.append(UInt16(0))
        writer.append(contentsOf: fileID.bytes)
        writer.append(sequence)
        writer.append(UInt64(committedSize))
        writer.append(UInt64(denseBlocks))
        for claim in slots {
            switch claim {
            case nil:
                writer.appendZeros(Self.claimSize)
            case let .inSlot(block, copyNonce, supersedes)?:
                writer.append(UInt8(1))
                writer.appendZeros(7)
                writer.append(UInt64(block))
                writer.append(contentsOf: copyNonce)
                writer.append(contentsOf: supersedes)
            case let .inPlace(block, nonce, olderCopy)?:
                writer.append(UInt8(2))
                writer.appendZeros(7)
                writer.append(UInt64(block))
                writer.append(contentsOf: nonce)
                writer.append(contentsOf: olderCopy)
            }
        }
        attributes.encode(into: &writer)
        writer.appendZeros(Self.nonceOffset - writer.bytes.count)
        let nonce = try nonce ?? SecureRandom.bytes(AESGCMKey.nonceSize)
        let tag = try key.seal(nonce: nonce, aad: writer.bytes, plaintext: [])
        writer.append(contentsOf: nonce)
        writer.append(contentsOf: tag)
        return writer.bytes
    }

    /// The record in `bytes`; nil when all 512 are zero (never written). Anything else that is
    /// not a record this volume's key wrote, unchanged, is an error.
    public static func decode(_ bytes: [UInt8], key: AESGCMKey) throws(RecordError) -> FileRecord? {
        guard bytes.count == size else { throw RecordError(.file, .wrongSize(bytes.count)) }
        if bytes.allSatisfy({ $0 == 0 }) { return nil }
        let fields = Array(bytes[..<nonceOffset])
        do {
            _ = try key.open(nonce: Array(bytes[nonceOffset..<(nonceOffset + AESGCMKey.nonceSize)]), aad: fields,
                             sealed: Array(bytes[(nonceOffset + AESGCMKey.nonceSize)...]))
        } catch {
            throw RecordError(.file, .authenticationFailed)
        }
        // Authentic, so written by epochfs: a layout it does not know is a newer format.
        var reader = ByteReader(fields[...], what: "file record")
        do {
            let version = try reader.readUInt16()
            guard version == Self.version, try reader.readUInt16() == 0 else { throw RecordError(.file, .unknownVersion(version)) }
            let fileID = try FileID(try reader.read(FileID.byteCount))
            let sequence = try reader.readUInt64()
            let committedSize = try reader.readUInt64(), denseBlocks = try reader.readUInt64()
            guard committedSize <= UInt64(Int.max), denseBlocks <= UInt64(Int.max) else { throw RecordError(.file, .malformed) }
            var slots: [SlotClaim?] = []
            for _ in 0..<slotCount {
                let kind = try reader.readUInt8()
                _ = try reader.read(7)
                let block = try reader.readUInt64()
                let first = Array(try reader.read(AESGCMKey.nonceSize)), second = Array(try reader.read(AESGCMKey.nonceSize))
                guard block <= UInt64(Int.max) else { throw RecordError(.file, .malformed) }
                switch kind {
                case 0: slots.append(nil)
                case 1: slots.append(.inSlot(block: Int(block), copyNonce: first, supersedes: second))
                case 2: slots.append(.inPlace(block: Int(block), nonce: first, olderCopy: second))
                default: throw RecordError(.file, .malformed)
                }
            }
            let attributes = try AttributeBinding.decode(from: &reader)
            return FileRecord(fileID: fileID, sequence: sequence, committedSize: Int(committedSize), denseBlocks: Int(denseBlocks),
                              slots: slots, attributes: attributes)
        } catch let error as RecordError {
            throw error
        } catch {
            throw RecordError(.file, .malformed)
        }
    }
}
