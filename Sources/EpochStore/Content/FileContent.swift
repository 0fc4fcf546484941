import CLinux
import EpochCrypto
import EpochFormat
import EpochIO
import EpochSystem
import Glibc
import Synchronization

/// Why a file's content could not be read. The frontend turns each into EIO.
public enum ContentError: Error, Equatable, Sendable, CustomStringConvertible {
    case badFileHeader(version: UInt16)
    case block(index: Int, EnvelopeError)
    /// Format 3 (docs/FORMAT.md §6.2): the file record is missing or does not authenticate.
    case record(RecordError)
    case missingRecord
    /// Older than the record this process committed.
    case olderRecord(found: UInt64, committed: UInt64)
    /// The backing file holds fewer plaintext bytes than the last commit made durable.
    case cut(size: Int, committed: Int)
    /// A block the last commit found holding data is all zeros.
    case zeroedBlock(index: Int)
    /// The shadow slot copy the last commit found current is gone or damaged.
    case slotCopy(index: Int)
    /// Format 5: the extended attributes are not a set the record binds (§5.5).
    case attributes

    public var description: String {
        switch self {
        case let .badFileHeader(version): "file header has unknown version \(version)"
        case let .block(index, error): "block \(index): \(error)"
        case let .record(error): "\(error)"
        case .missingRecord: "file record is missing (all zeros)"
        case let .olderRecord(found, committed): "file record \(found) was put back over record \(committed)"
        case let .cut(size, committed): "file was cut: it holds \(size) bytes, its last commit made \(committed) durable"
        case let .zeroedBlock(index): "block \(index): all zeros where the last commit found data"
        case let .slotCopy(index): "block \(index): the shadow slot copy its last commit made current does not open"
        case .attributes: "extended attributes are not the ones the file's record binds (changed, put back, copied or removed)"
        }
    }
}

/// The plaintext view of one backing regular file (shared by all its hard links and open
/// handles). Reads run in parallel; a write, truncate or append excludes reads of the same file,
/// so nobody ever reads a half-written block.
public final class FileContent: Sendable {
    let volume: LiveVolume
    let layout: ContentLayout
    /// Reads share it; whatever may change the backing file (a write, truncate, allocation,
    /// reseal, commit) holds it alone, through `exclusively`.
    let access = ReadWriteLock()
    let cache = Mutex(Cache())
    /// The backing file's size as a read last found it, or -1 after anything held `access`
    /// alone: reads between two changes take it from here, not from an fstat each (a cut by
    /// someone else then shows as a short read, EIO).
    private let backingSizeSeen = Atomic(-1)

    struct Cache {
        /// nil until read from (or written to) the backing file's header.
        private(set) var fileID: FileID?
        /// One initialised AEAD per epoch for `fileID`, derived once (docs/FORMAT.md §2.2).
        var fileKeys: [Epoch: AESGCMKey] = [:]
        /// The keyring generation (VolumeKeys.generation) `fileKeys` were derived under.
        var fileKeysGeneration: UInt64 = 0
        var shadow = ShadowSlots()
        /// Format 3: the file record as last read or committed, and what commits track
        /// (docs/FORMAT.md §6.2).
        var commits = CommitState()

        /// A truncate to zero ends a file id; the keys derived from it go with it, and so do
        /// the slots (the backing file is empty) and the record.
        mutating func adopt(_ id: FileID?) {
            guard id != fileID else { return }
            fileID = id
            fileKeys = [:]
            shadow.forget()
            commits = CommitState()
        }
    }

    let identity: BackingNode.Identity
    /// BackingNodes of this file alive now (the mount's, a walk's): a copy-on-write reseal may
    /// replace the backing file only while its own is the one.
    let nodes = Atomic(0)
    /// Written, cut or allocated since its last commit began (`noteChanged`, UnmountCommit.swift).
    let changedSinceCommit = Atomic(false)

    /// Made only by `LiveVolume.content(of:)`, which keeps one per backing file.
    init(volume: LiveVolume, identity: BackingNode.Identity) {
        self.volume = volume
        self.identity = identity
        self.layout = volume.contentLayout
    }

    deinit { volume.forgetContent(of: identity) }

    var io: any BackingIO { volume.io }

    func nodeCreated() { nodes.add(1, ordering: .relaxed) }
    func nodeReleased() { nodes.subtract(1, ordering: .relaxed) }
    var nodeCount: Int { nodes.load(ordering: .relaxed) }

    /// Re-reads the file header at open, so a header changed underneath (by anyone with access
    /// to the backing dir) is noticed and never trusted from an earlier open.
    func reloadHeader(fd: FileDescriptor) throws {
        try exclusively {
            guard try io.size(fd) >= layout.dataOffset else {
                // Cut below its record by someone else: what was committed is gone.
                if let committed = cache.withLock({ $0.commits.record?.committedSize }), committed > 0 {
                    throw failIntegrity(ContentError.cut(size: 0, committed: committed))
                }
                cache.withLock { $0.adopt(nil) }
                return
            }
            // What is known of the slots stays while the file id does: it is shared with the
            // other opens of the file, and knows which copies are not durable yet.
            _ = try readFileID(fd)
            // At open too: a file cut to nothing is never read (the kernel sees its size).
            try requireCommittedSize(try size(fd: fd))
            try loadSlots(fd)
        }
    }

    /// Runs `body` with `access` held alone; what it did to the backing file's size is read
    /// afresh by the next read.
    func exclusively<R>(_ body: () throws -> R) rethrows -> R {
        try access.withWriteLock {
            defer { backingSizeSeen.store(-1, ordering: .relaxed) }
            return try body()
        }
    }

    /// The backing file's size, for a read (holding `access` shared, so no change runs).
    private func backingSizeForRead(_ fd: FileDescriptor) throws -> Int {
        let seen = backingSizeSeen.load(ordering: .relaxed)
        if seen >= 0 { return seen }
        let size = try io.size(fd)
        backingSizeSeen.store(size, ordering: .relaxed)
        return size
    }

    /// The plaintext size, from the backing file's size.
    public func size(fd: FileDescriptor) throws -> Int {
        layout.plaintextSize(backingSize: try io.size(fd))
    }

    /// Requests this large come from a streaming reader or writer: reads from the kernel's
    /// readahead, writes from a program writing in big blocks; random access is smaller.
    static let streamingRequestSize = 128 * 1024

    /// Reads up to `count` plaintext bytes at `offset` and hands them to `deliver` (empty at or
    /// past the end). The bytes live in a reused buffer only for the duration of `deliver`.
    public func read<R>(fd: FileDescriptor, offset: Int, count: Int, _ deliver: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        try access.withReadLock {
            let backing = try backingSizeForRead(fd)
            let size = layout.plaintextSize(backingSize: backing)
            try requireCommittedSize(size)
            guard offset < size, count > 0 else { return try deliver(UnsafeRawBufferPointer(start: nil, count: 0)) }
            let end = min(offset + count, size)
            let fileID = try loadFileID(fd)
            try requireCommittedSize(size)
            try loadSlots(fd)
            let blockSize = layout.blockSize
            let first = offset / blockSize, last = (end - 1) / blockSize
            let start = layout.backingOffset(block: first)
            let sealedCount = min(backing, layout.backingOffset(block: last + 1)) - start
            // A read this large is the kernel's readahead of a sequential reader. Its blocks come
            // straight from the disk, not through a second, ciphertext copy of the file in the
            // page cache (bench/RESULTS.md: a fifth to a third less daemon CPU per byte).
            if count >= Self.streamingRequestSize, let delivered = try DirectRead.with(io: io, fd: fd, offset: start, count: sealedCount, { sealed in
                try openBlocks(sealed, blocks: first...last, range: offset..<end, fileID: fileID, fd: fd, deliver)
            }) {
                return delivered
            }
            return try ScratchPool.shared.with(size: sealedCount) { sealed in
                guard try io.preadFully(fd, into: sealed, at: start) == sealedCount else {
                    throw SystemError("read", path: "backing file changed size while read", errno: EIO)
                }
                return try openBlocks(UnsafeRawBufferPointer(sealed), blocks: first...last, range: offset..<end, fileID: fileID, fd: fd, deliver)
            }
        }
    }

    /// Opens `blocks`, whose envelopes `sealed` holds back to back, and hands `deliver` the
    /// plaintext bytes of `range`.
    func openBlocks<R>(_ sealed: UnsafeRawBufferPointer, blocks: ClosedRange<Int>, range: Range<Int>, fileID: FileID,
                               fd: FileDescriptor, _ deliver: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let blockSize = layout.blockSize
        return try ScratchPool.shared.with(size: range.count + blockSize) { scratch in
            let output = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<range.count])
            let spare = UnsafeMutableRawBufferPointer(rebasing: scratch[range.count...])
            var key: BlockKey?
            for block in blocks {
                let sealedStart = (block - blocks.lowerBound) * layout.sealedBlockSize
                let blockSealed = UnsafeRawBufferPointer(rebasing: sealed[sealedStart..<min(sealedStart + layout.sealedBlockSize, sealed.count)])
                let blockStart = block * blockSize
                let plainLength = blockSealed.count - Envelope.overhead
                let lo = max(range.lowerBound, blockStart), hi = min(range.upperBound, blockStart + plainLength)
                let target = UnsafeMutableRawBufferPointer(rebasing: output[(lo - range.lowerBound)..<(hi - range.lowerBound)])
                if lo == blockStart && hi == blockStart + plainLength {
                    try openBlock(block, fileID: fileID, fd: fd, sealed: blockSealed, into: target, key: &key)
                } else {
                    // Only part of this block was asked for: open it aside, copy the part.
                    try openBlock(block, fileID: fileID, fd: fd, sealed: blockSealed,
                                  into: UnsafeMutableRawBufferPointer(rebasing: spare[0..<plainLength]), key: &key)
                    target.copyMemory(from: UnsafeRawBufferPointer(rebasing: spare[(lo - blockStart)..<(hi - blockStart)]))
                }
            }
            return try deliver(UnsafeRawBufferPointer(output))
        }
    }

    /// Writes `data` at `offset`, or at the end of the file when `offset` is nil (O_APPEND).
    /// Returns the offset written at.
    @discardableResult
    public func write(fd: FileDescriptor, offset requested: Int?, data: UnsafeRawBufferPointer) throws -> Int {
        noteChanged()
        return try volume.sealing { epoch in try exclusively {
            let backing = try io.fstat(fd)
            let size = layout.plaintextSize(backingSize: Int(backing.st_size))
            let offset = requested ?? size
            guard data.count > 0 else { return offset }
            let end = offset + data.count
            let blockSize = layout.blockSize
            let first = offset / blockSize, last = (end - 1) / blockSize
            // A partial last block before the written range becomes a full, zero-padded block.
            let padsTail = size % blockSize != 0 && first > size / blockSize
            try reserve([padsTail ? blockRange(size / blockSize) : nil,
                         layout.backingOffset(block: first)
                            ..< min(layout.backingSize(plaintextSize: max(size, end)), layout.backingOffset(block: last + 1))],
                        in: fd, backing)
            let fileID = try prepareForWrite(fd, backingSize: Int(backing.st_size))
            try requireCommittedSize(size)
            if padsTail {
                try rewriteBlock(size / blockSize, fileID: fileID, fd: fd, currentSize: size, newLength: blockSize, epoch: epoch)
            }
            var key = try blockKey(epoch, fileID: fileID)
            let sealedCapacity = (last - first + 1) * layout.sealedBlockSize
            try ScratchPool.shared.with(size: sealedCapacity + blockSize) { scratch in
                let spare = UnsafeMutableRawBufferPointer(rebasing: scratch[sealedCapacity..<(sealedCapacity + blockSize)])
                var sealedLength = 0
                // The blocks that keep old bytes of a stored (not hole) block, and their sealed bytes.
                var rewrites: [(block: Int, sealed: Range<Int>)] = []
                for block in first...last {
                    let blockStart = block * blockSize
                    let lo = max(offset, blockStart) - blockStart, hi = min(end, blockStart + blockSize) - blockStart
                    let incoming = UnsafeRawBufferPointer(rebasing: data[(blockStart + lo - offset)..<(blockStart + hi - offset)])
                    let existing = max(0, min(blockSize, size - blockStart))
                    let plain: UnsafeRawBufferPointer
                    var keepsStoredBytes = false
                    if lo == 0 && hi >= existing {
                        plain = incoming // the write replaces the whole block
                    } else {
                        // Read-modify-write: the old bytes, zeros up to the write, the new bytes.
                        let (old, wasHole) = try readBlock(block, fileID: fileID, fd: fd, length: existing)
                        keepsStoredBytes = !wasHole
                        let length = max(existing, hi)
                        spare.initializeMemory(as: UInt8.self, repeating: 0)
                        old.withUnsafeBytes { spare.copyMemory(from: $0) }
                        UnsafeMutableRawBufferPointer(rebasing: spare[lo..<hi]).copyMemory(from: incoming)
                        plain = UnsafeRawBufferPointer(rebasing: spare[0..<length])
                    }
                    let sealed = sealedLength..<(sealedLength + plain.count + Envelope.overhead)
                    try sealBlock(plain, block: block, key: &key, into: UnsafeMutableRawBufferPointer(rebasing: scratch[sealed]))
                    if keepsStoredBytes { rewrites.append((block, sealed)) }
                    sealedLength = sealed.upperBound
                }
                // Rewrites whose old copy may be durable go to slots; the rest is written in
                // place, each run of blocks in one write.
                var aside: [Int] = []
                for rewrite in rewrites {
                    guard let slot = try slotForRewrite(of: rewrite.block, fd: fd) else { continue }
                    try writeSlot(slot, UnsafeRawBufferPointer(rebasing: scratch[rewrite.sealed]), block: rewrite.block, fd: fd)
                    aside.append(rewrite.block)
                }
                func writeInPlace(_ blocks: ClosedRange<Int>) throws {
                    let from = (blocks.lowerBound - first) * layout.sealedBlockSize
                    let to = blocks.upperBound == last ? sealedLength : (blocks.upperBound + 1 - first) * layout.sealedBlockSize
                    let at = layout.backingOffset(block: blocks.lowerBound)
                    try io.pwriteFully(fd, UnsafeRawBufferPointer(rebasing: scratch[from..<to]), at: at)
                    if data.count >= Self.streamingRequestSize {
                        // A streaming writer: have the disk start on these blocks now rather than all
                        // at its fsync, when the kernel would otherwise begin (bench/RESULTS.md).
                        io.syncFileRange(fd, offset: at, length: to - from)
                    }
                    noteWrittenInPlace(blocks)
                }
                var runStart: Int?
                for block in first...last {
                    if aside.contains(block) {
                        if let start = runStart { try writeInPlace(start...(block - 1)) }
                        runStart = nil
                    } else if runStart == nil {
                        runStart = block
                    }
                }
                if let start = runStart { try writeInPlace(start...last) }
                cache.withLock { $0.commits.noteStored(first...last) }
                if aside.contains(last), layout.backingSize(plaintextSize: end) > Int(backing.st_size) {
                    // Nothing after the last block's copy aside is written: the file still
                    // grows to its new size.
                    try io.ftruncate(fd, size: layout.backingSize(plaintextSize: end))
                }
            }
            return offset
        } }
    }

    /// Sets the plaintext size: shrinking cuts the last block, growing adds zeros (holes).
    public func truncate(fd: FileDescriptor, to newSize: Int) throws {
        noteChanged()
        try volume.sealing { epoch in try exclusively { try truncateLocked(fd, to: newSize, epoch: epoch) } }
    }

    func truncateLocked(_ fd: FileDescriptor, to newSize: Int, epoch: Epoch) throws {
        let backing = try io.fstat(fd)
        let size = layout.plaintextSize(backingSize: Int(backing.st_size))
        guard newSize != size else { return }
        // Format 4 keeps an emptied file's record, and with it the file id its directory's
        // record binds it by (docs/FORMAT.md §6).
        let keepsRecord = layout.version >= DirectoryRecord.version && Int(backing.st_size) >= layout.dataOffset
        guard newSize > 0 || keepsRecord else {
            try io.ftruncate(fd, size: 0)
            cache.withLock { $0.adopt(nil) } // the next write starts a new file id
            return
        }
        let blockSize = layout.blockSize
        // Growing reseals a partial last block longer: its new length is reserved first.
        let grownTail = newSize > size && size % blockSize != 0
        try reserve([grownTail ? blockRange(size / blockSize) : nil], in: fd, backing)
        let fileID = try prepareForWrite(fd, backingSize: Int(backing.st_size))
        try requireCommittedSize(size)
        if newSize < size {
            // The cut block keeps its first bytes: a rewrite through a slot, made durable (with
            // the record that no longer promises what goes) before the ftruncate, which a disk may
            // keep without the write.
            let cutsABlock = newSize % blockSize != 0
            if cutsABlock {
                try rewriteBlock(newSize / blockSize, fileID: fileID, fd: fd, currentSize: size, newLength: newSize % blockSize, epoch: epoch,
                                 makeRoom: true)
            }
            try commitShrink(fd, toSize: newSize, sync: cutsABlock)
            try io.ftruncate(fd, size: newSize == 0 ? layout.dataOffset : layout.backingSize(plaintextSize: newSize))
            // Copies in slots of the blocks cut off must never come back, but they are the
            // current copies until the cut is durable.
            try dropSlots(from: (newSize + blockSize - 1) / blockSize, fd: fd)
            return
        }
        if size % blockSize != 0 {
            let block = size / blockSize
            try rewriteBlock(block, fileID: fileID, fd: fd, currentSize: size, newLength: min(blockSize, newSize - block * blockSize), epoch: epoch)
        }
        try io.ftruncate(fd, size: layout.backingSize(plaintextSize: newSize))
    }
}
