import CLinux
import EpochCrypto
import EpochFormat
import EpochIO
import Glibc
import Synchronization

/// Why a file's content could not be read. The frontend turns each into EIO.
public enum ContentError: Error, Equatable, Sendable, CustomStringConvertible {
    case badFileHeader(version: UInt16)
    case block(index: Int, EnvelopeError)

    public var description: String {
        switch self {
        case let .badFileHeader(version): "file header has unknown version \(version)"
        case let .block(index, error): "block \(index): \(error)"
        }
    }
}

/// The plaintext view of one backing regular file (shared by all its hard links and open
/// handles). Reads run in parallel; a write, truncate or append excludes reads of the same file,
/// so nobody ever reads a half-written block.
public final class FileContent: Sendable {
    private let volume: LiveVolume
    private let layout: ContentLayout
    private let access = ReadWriteLock()
    private let cache = Mutex(Cache())

    private struct Cache {
        /// nil until read from (or written to) the backing file's header.
        private(set) var fileID: FileID?
        /// One initialised AEAD per epoch for `fileID`, derived once (docs/FORMAT.md §2.2).
        var fileKeys: [UInt32: AESGCMKey] = [:]
        /// The keyring generation (VolumeKeys.generation) `fileKeys` were derived under.
        var fileKeysGeneration: UInt64 = 0
        var shadow = ShadowSlots()

        /// A truncate to zero ends a file id; the keys derived from it go with it, and so do
        /// the slots (the backing file is empty).
        mutating func adopt(_ id: FileID?) {
            guard id != fileID else { return }
            fileID = id
            fileKeys = [:]
            shadow.forget()
        }
    }

    private let identity: BackingNode.Identity
    /// BackingNodes of this file alive now (the mount's, a walk's): a copy-on-write reseal may
    /// replace the backing file only while its own is the one.
    private let nodes = Atomic(0)

    /// Made only by `LiveVolume.content(of:)`, which keeps one per backing file.
    init(volume: LiveVolume, identity: BackingNode.Identity) {
        self.volume = volume
        self.identity = identity
        self.layout = volume.contentLayout
    }

    deinit { volume.forgetContent(of: identity) }

    private var io: any BackingIO { volume.io }

    func nodeCreated() { nodes.add(1, ordering: .relaxed) }
    func nodeReleased() { nodes.subtract(1, ordering: .relaxed) }
    var nodeCount: Int { nodes.load(ordering: .relaxed) }

    /// Re-reads the file header at open, so a header changed underneath (by anyone with access
    /// to the backing dir) is noticed and never trusted from an earlier open.
    public func reloadHeader(fd: FileDescriptor) throws {
        try access.withWriteLock {
            guard try io.size(fd) >= layout.dataOffset else {
                cache.withLock { $0.adopt(nil) }
                return
            }
            // What is known of the slots stays while the file id does: it is shared with the
            // other opens of the file, and knows which copies are not durable yet.
            _ = try readFileID(fd)
            try loadSlots(fd)
        }
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
            let backing = try io.size(fd)
            let size = layout.plaintextSize(backingSize: backing)
            guard offset < size, count > 0 else { return try deliver(UnsafeRawBufferPointer(start: nil, count: 0)) }
            let end = min(offset + count, size)
            let fileID = try loadFileID(fd)
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
    private func openBlocks<R>(_ sealed: UnsafeRawBufferPointer, blocks: ClosedRange<Int>, range: Range<Int>, fileID: FileID,
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
        try volume.sealing { epoch in try access.withWriteLock {
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
        try volume.sealing { epoch in try access.withWriteLock { try truncateLocked(fd, to: newSize, epoch: epoch) } }
    }

    private func truncateLocked(_ fd: FileDescriptor, to newSize: Int, epoch: UInt32) throws {
        let backing = try io.fstat(fd)
        let size = layout.plaintextSize(backingSize: Int(backing.st_size))
        guard newSize != size else { return }
        guard newSize > 0 else {
            try io.ftruncate(fd, size: 0)
            cache.withLock { $0.adopt(nil) } // the next write starts a new file id
            return
        }
        let blockSize = layout.blockSize
        // Growing reseals a partial last block longer: its new length is reserved first.
        let grownTail = newSize > size && size % blockSize != 0
        try reserve([grownTail ? blockRange(size / blockSize) : nil], in: fd, backing)
        let fileID = try prepareForWrite(fd, backingSize: Int(backing.st_size))
        if newSize < size {
            // Copies in slots of blocks past the new end must never come back.
            try dropSlots(from: (newSize + blockSize - 1) / blockSize, fd: fd)
            if newSize % blockSize != 0 {
                try rewriteBlock(newSize / blockSize, fileID: fileID, fd: fd, currentSize: size, newLength: newSize % blockSize,
                                 epoch: epoch, protect: false)
            }
        } else if size % blockSize != 0 {
            let block = size / blockSize
            try rewriteBlock(block, fileID: fileID, fd: fd, currentSize: size, newLength: min(blockSize, newSize - block * blockSize), epoch: epoch)
        }
        try io.ftruncate(fd, size: layout.backingSize(plaintextSize: newSize))
    }

    /// fallocate(2) on the plaintext (mode as in the system call): reserves the backing space
    /// of [offset, offset + length), ciphertext overhead included, so later writes into the
    /// range cannot fail for lack of space; without KEEP_SIZE the file grows to cover it.
    /// PUNCH_HOLE (with KEEP_SIZE) and ZERO_RANGE make the range read as zeros; other modes
    /// are EOPNOTSUPP.
    public func allocate(fd: FileDescriptor, mode: Int32, offset: Int, length: Int) throws {
        let keepSize = mode & epochfs_FALLOC_FL_KEEP_SIZE != 0
        let zeroing = mode & ~epochfs_FALLOC_FL_KEEP_SIZE
        guard offset >= 0, length > 0 else { throw SystemError("fallocate", path: "", errno: EINVAL) }
        guard zeroing == 0 || zeroing == epochfs_FALLOC_FL_ZERO_RANGE || (zeroing == epochfs_FALLOC_FL_PUNCH_HOLE && keepSize) else {
            throw SystemError("fallocate", path: "", errno: EOPNOTSUPP)
        }
        try volume.sealing { epoch in try access.withWriteLock {
            let backing = try io.fstat(fd)
            let size = layout.plaintextSize(backingSize: Int(backing.st_size))
            let end = offset + length
            let blockSize = layout.blockSize
            if zeroing == 0 || zeroing == epochfs_FALLOC_FL_ZERO_RANGE {
                // Every block the range touches, each as a full block (a later write may fill
                // it); and the old last block when the file grows past it (it is resealed).
                let grownTail = !keepSize && end > size && size % blockSize != 0
                let range = layout.backingOffset(block: offset / blockSize)..<layout.backingOffset(block: (end - 1) / blockSize + 1)
                // And both slots, so that writes keeping old bytes of a block may use them.
                try reserve([grownTail ? blockRange(size / blockSize) : nil, range], in: fd, backing, forFallocate: true)
            }
            if zeroing != 0, offset < size {
                try zero(offset..<min(end, size), fd: fd, size: size, epoch: epoch, punch: zeroing == epochfs_FALLOC_FL_PUNCH_HOLE)
            }
            if !keepSize, end > size { try truncateLocked(fd, to: end, epoch: epoch) }
        } }
    }

    /// Makes `range` (inside the file) read as zeros: whole blocks become holes (punched, or
    /// zeroed in place), partial ones at the edges are resealed.
    private func zero(_ range: Range<Int>, fd: FileDescriptor, size: Int, epoch: UInt32, punch: Bool) throws {
        let blockSize = layout.blockSize
        let fileID = try loadFileID(fd)
        let firstWhole = (range.lowerBound + blockSize - 1) / blockSize
        // The last block counts as whole when the range reaches the end of the file.
        let endWhole = range.upperBound == size ? (size + blockSize - 1) / blockSize : range.upperBound / blockSize
        for block in Set([range.lowerBound / blockSize, (range.upperBound - 1) / blockSize]) where block < firstWhole || block >= endWhole {
            let blockStart = block * blockSize
            let length = min(blockSize, size - blockStart)
            var (plain, _) = try readBlock(block, fileID: fileID, fd: fd, length: length)
            for index in max(range.lowerBound, blockStart)..<min(range.upperBound, blockStart + length) { plain[index - blockStart] = 0 }
            // In place, so that making room never needs new space.
            try writeBlock(block, plain, fileID: fileID, fd: fd, epoch: epoch, keepsStoredBytes: false)
        }
        if firstWhole < endWhole {
            let start = layout.backingOffset(block: firstWhole)
            let stop = min(layout.backingOffset(block: endWhole), layout.backingSize(plaintextSize: size))
            let mode = punch ? epochfs_FALLOC_FL_PUNCH_HOLE | epochfs_FALLOC_FL_KEEP_SIZE : epochfs_FALLOC_FL_ZERO_RANGE | epochfs_FALLOC_FL_KEEP_SIZE
            try io.fallocate(fd, mode: mode, offset: start, length: stop - start)
            noteWrittenInPlace(firstWhole...(endWhole - 1)) // holes now: copies in slots are stale
        }
    }

    /// The stored bytes of block `index` at its full size.
    private func blockRange(_ index: Int) -> Range<Int> {
        layout.backingOffset(block: index)..<layout.backingOffset(block: index + 1)
    }

    /// Reserves the backing blocks of `ranges` (KEEP_SIZE), and of the file header of a file
    /// that has none yet, before anything is written, so that a full disk fails the call
    /// before it changes a byte; the gaps between them stay holes. For a write or truncate,
    /// nothing is done for a range inside a file with no holes (those blocks are allocated
    /// already), nor where the backing file system has no fallocate; `forFallocate` reserves
    /// every range, and both shadow slots, and lets EOPNOTSUPP reach the caller, who may fall
    /// back to writing zeros.
    private func reserve(_ ranges: [Range<Int>?], in fd: FileDescriptor, _ backing: stat, forFallocate: Bool = false) throws {
        // The slots are holes until used; they do not make a file sparse.
        let size = Int(backing.st_size), sparse = Int(backing.st_blocks) * 512 + layout.headerOffset < size
        var wanted = ranges.compactMap { $0 }.filter { !$0.isEmpty && (forFallocate || sparse || $0.upperBound > size) }
        if size < layout.dataOffset { wanted.append(layout.headerOffset..<layout.dataOffset) }
        let reservesSlots = forFallocate && layout.slotCount > 0 && !cache.withLock { $0.shadow.reserved }
        if reservesSlots { wanted.append(0..<layout.headerOffset) }
        // One fallocate for ranges that touch or overlap.
        var merged: [Range<Int>] = []
        for range in wanted.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = merged.last, range.lowerBound <= last.upperBound {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
            } else {
                merged.append(range)
            }
        }
        do {
            for range in merged { try io.fallocate(fd, mode: epochfs_FALLOC_FL_KEEP_SIZE, offset: range.lowerBound, length: range.count) }
            if reservesSlots { cache.withLock { $0.shadow.reserved = true } }
        } catch let error as SystemError where error.errno == EOPNOTSUPP && !forFallocate {
            // A backing file system without fallocate: writes are as safe as it makes them.
        }
    }

    /// Visits every block of the file open at `fd`, in order: the key id its current copy (in
    /// place, or in a shadow slot) names and whether it opens, exactly as a read through the
    /// mount would. Throws what stops the whole file from being read (a bad file header, an
    /// I/O error).
    public func visitStoredBlocks(fd: FileDescriptor, _ visit: (StoredBlock) throws -> Void) throws {
        let size = try self.size(fd: fd)
        let blockSize = layout.blockSize
        try access.withReadLock { try loadSlots(fd) }
        for index in 0..<((size + blockSize - 1) / blockSize) {
            let length = min(blockSize, size - index * blockSize)
            let keyID = try storedKeyID(of: index, fd: fd)
            var error: EnvelopeError?
            do {
                _ = try read(fd: fd, offset: index * blockSize, count: length) { $0.count }
            } catch let ContentError.block(_, envelopeError) {
                error = envelopeError
            }
            try visit(StoredBlock(index: index, keyID: keyID, length: length, error: error))
        }
    }

    /// The epoch block `index`'s current copy (in a shadow slot, or in place) names; nil for a
    /// hole (all zeros) or a copy too damaged to name one. The slots must be loaded.
    private func storedKeyID(of index: Int, fd: FileDescriptor) throws -> UInt32? {
        let inPlace = try io.preadFully(fd, count: Envelope.overhead, at: layout.backingOffset(block: index))
        let current = try currentSlot(of: index, inPlace: inPlace).flatMap { try readSlot($0, fd: fd)?.sealed }
        // The envelope's first bytes name the epoch; a hole's are zeros, which name none.
        return try? (current ?? inPlace).withUnsafeBytes { try Envelope.keyID(of: $0) }
    }

    /// The slot that holds block `index`'s current copy, given the first bytes of its copy in
    /// place: the one that supersedes the copy in place still there (FORMAT.md §6).
    private func currentSlot(of index: Int, inPlace: some Collection<UInt8>) -> Int? {
        guard let (slot, supersedes) = cache.withLock({ $0.shadow.slot(of: index) }), inPlace.count >= Envelope.headerSize,
              inPlace.dropFirst(ContentLayout.nonceRange.lowerBound).prefix(ContentLayout.nonceRange.count).elementsEqual(supersedes) else {
            return nil
        }
        return slot
    }

    /// Reseals under the active epoch, with the same plaintext, every block of `blocks` whose
    /// current copy names an older epoch (re-encryption). Each is stored as a rewrite keeping
    /// all of its bytes: into a shadow slot while the copy it replaces may be durable, and the
    /// file is synced (freeing the slots) before a third such copy would need one, so that a
    /// power cut at any moment leaves every block readable (docs/FORMAT.md §6). The blocks end
    /// durable. A block that does not open is left as it is and counted.
    public func resealOlderBlocks(fd: FileDescriptor, in blocks: Range<Int>) throws -> ResealCount {
        try volume.sealing { epoch in try access.withWriteLock {
            var count = ResealCount()
            let backing = try io.fstat(fd)
            let size = layout.plaintextSize(backingSize: Int(backing.st_size))
            let blockSize = layout.blockSize
            let stored = blocks.clamped(to: 0..<((size + blockSize - 1) / blockSize))
            guard !stored.isEmpty else { return count }
            // The file id first: taking it resets what is known of the slots, reservation included.
            let fileID = try loadFileID(fd)
            try loadSlots(fd)
            // Resealing never drops the protection the slots give: without their space, it stops.
            guard try reserveSlots(fd) else { throw SystemError("reencrypt", path: "shadow slots", errno: ENOSPC) }
            var unsynced = false
            for index in stored {
                let keyID = try storedKeyID(of: index, fd: fd)
                guard let keyID, keyID != epoch else {
                    count.current += 1
                    if let keyID { count.keyIDs[keyID, default: 0] += 1 }
                    continue
                }
                let plain: [UInt8]
                do {
                    plain = try readBlock(index, fileID: fileID, fd: fd, length: min(blockSize, size - index * blockSize)).plain
                } catch is ContentError {
                    count.unreadable += 1
                    count.keyIDs[keyID, default: 0] += 1
                    continue
                }
                if cache.withLock({ $0.shadow.isFull }) {
                    try syncMarking(fd, dataOnly: true)
                    try freeSlots(fd)
                }
                try writeBlock(index, plain, fileID: fileID, fd: fd, epoch: epoch, keepsStoredBytes: true)
                count.resealed += 1
                count.keyIDs[epoch, default: 0] += 1
                unsynced = true
            }
            if unsynced {
                try syncMarking(fd, dataOnly: true)
                try freeSlots(fd)
            }
            return count
        } }
    }

    /// Sealed bytes a copy-on-write reseal reads, and writes, per call.
    static let copyChunk = 1 << 20

    /// Re-encryption by copy-on-write (docs/FORMAT.md §6.1): writes into `copy`, an empty
    /// file, this file's header (same file id) and every block, resealed under the active epoch
    /// where its current copy names an older one; holes stay holes and the slots stay empty.
    /// Returns nil, having written nothing, when no block names an older epoch. The caller
    /// makes `copy` durable and renames it over the file.
    public func resealedCopy(fd: FileDescriptor, into copy: FileDescriptor) throws -> ResealCount? {
        try volume.sealing { epoch in try access.withWriteLock {
            let size = try self.size(fd: fd)
            guard size > 0 else { return nil }
            let fileID = try loadFileID(fd)
            try loadSlots(fd)
            var older = false
            try forEachChunk(fd, size: size) { blocks, sealed in
                for block in blocks where !older {
                    let keyID = try keyID(of: block, stored: envelope(of: block, in: blocks, sealed), fd: fd)
                    older = keyID != nil && keyID != epoch
                }
                return !older
            }
            guard older else { return nil }
            try io.pwriteFully(copy, layout.header(fileID: fileID), at: layout.headerOffset)
            var count = ResealCount()
            var key = try blockKey(epoch, fileID: fileID)
            var openKey: BlockKey?
            let sealedSize = layout.sealedBlockSize
            try ScratchPool.shared.with(size: Self.copyChunk + layout.blockSize) { scratch in
                let plain = UnsafeMutableRawBufferPointer(rebasing: scratch[Self.copyChunk...])
                try forEachChunk(fd, size: size) { blocks, sealed in
                    // Runs of stored blocks, each written with one pwrite; holes are not written.
                    var run: Range<Int>?
                    func writeRun() throws {
                        guard let bytes = run else { return }
                        try io.pwriteFully(copy, UnsafeRawBufferPointer(rebasing: scratch[bytes]),
                                           at: layout.backingOffset(block: blocks.lowerBound) + bytes.lowerBound)
                        run = nil
                    }
                    for block in blocks {
                        let at = (block - blocks.lowerBound) * sealedSize
                        let stored = envelope(of: block, in: blocks, sealed)
                        let output = UnsafeMutableRawBufferPointer(rebasing: scratch[at..<(at + stored.count)])
                        let inSlot = cache.withLock { $0.shadow.slot(of: block) != nil }
                        let keyID = try keyID(of: block, stored: stored, fd: fd)
                        if !inSlot && stored.allSatisfy({ $0 == 0 }) {
                            count.current += 1
                            try writeRun()
                            continue
                        }
                        if !inSlot && keyID == epoch {
                            output.copyMemory(from: stored) // current already, and no slot copy it could need
                            count.current += 1
                            count.keyIDs[epoch, default: 0] += 1
                        } else {
                            let opened = UnsafeMutableRawBufferPointer(rebasing: plain[0..<(stored.count - Envelope.overhead)])
                            do {
                                try openBlock(block, fileID: fileID, fd: fd, sealed: stored, into: opened, key: &openKey)
                                try sealBlock(UnsafeRawBufferPointer(opened), block: block, key: &key, into: output)
                                count.resealed += 1
                                count.keyIDs[epoch, default: 0] += 1
                            } catch is ContentError {
                                output.copyMemory(from: stored) // left as it is, as the in-place reseal does
                                count.unreadable += 1
                                if let keyID { count.keyIDs[keyID, default: 0] += 1 }
                            }
                        }
                        run = (run?.lowerBound ?? at)..<(at + stored.count)
                    }
                    try writeRun()
                    return true
                }
            }
            try io.ftruncate(copy, size: layout.backingSize(plaintextSize: size)) // a trailing hole keeps its size
            return count
        } }
    }

    /// The envelope in place of `block`, one of `blocks`, whose sealed bytes `sealed` holds back to back.
    private func envelope(of block: Int, in blocks: Range<Int>, _ sealed: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        let at = (block - blocks.lowerBound) * layout.sealedBlockSize
        return UnsafeRawBufferPointer(rebasing: sealed[at..<min(at + layout.sealedBlockSize, sealed.count)])
    }

    /// `storedKeyID` for a block whose envelope in place was read already into `stored`.
    private func keyID(of block: Int, stored: UnsafeRawBufferPointer, fd: FileDescriptor) throws -> UInt32? {
        if let slot = currentSlot(of: block, inPlace: stored) { return try readSlot(slot, fd: fd)?.sealed.withUnsafeBytes { try? Envelope.keyID(of: $0) } }
        return try? Envelope.keyID(of: stored)
    }

    /// Reads the stored blocks of a file of plaintext `size`, `copyChunk` bytes at a time, into
    /// a buffer of its own and hands each run of blocks and their sealed bytes to `body`, until
    /// it returns false. The access lock must be held.
    private func forEachChunk(_ fd: FileDescriptor, size: Int, _ body: (Range<Int>, UnsafeRawBufferPointer) throws -> Bool) throws {
        let blockCount = (size + layout.blockSize - 1) / layout.blockSize
        let perChunk = Self.copyChunk / layout.sealedBlockSize
        let end = layout.backingSize(plaintextSize: size)
        try ScratchPool.shared.with(size: perChunk * layout.sealedBlockSize) { buffer in
            for first in stride(from: 0, to: blockCount, by: perChunk) {
                let blocks = first..<min(first + perChunk, blockCount)
                let start = layout.backingOffset(block: first)
                let length = min(end, layout.backingOffset(block: blocks.upperBound)) - start
                guard try io.preadFully(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length]), at: start) == length else {
                    throw SystemError("read", path: "backing file changed size while read", errno: EIO)
                }
                guard try body(blocks, UnsafeRawBufferPointer(rebasing: buffer[0..<length])) else { return }
            }
        }
    }

    // MARK: - Shadow slots (docs/FORMAT.md §6)

    /// Writes block `index`'s envelope in place, or into a shadow slot when `keepsStoredBytes`
    /// (the rewrite keeps some of the block's old bytes) and the copy it replaces may be durable.
    private func store(_ sealed: UnsafeRawBufferPointer, block index: Int, fd: FileDescriptor, keepsStoredBytes: Bool) throws {
        if keepsStoredBytes, let slot = try slotForRewrite(of: index, fd: fd) {
            try writeSlot(slot, sealed, block: index, fd: fd)
        } else {
            try io.pwriteFully(fd, sealed, at: layout.backingOffset(block: index))
            noteWrittenInPlace(index...index)
        }
    }

    /// The slot a rewrite of block `index` (keeping stored bytes) goes to; nil for in place,
    /// also when both slots still hold copies a cut may need (more than two such rewrites
    /// between two syncs: the others are rewritten in place, FORMAT.md §6).
    private func slotForRewrite(of index: Int, fd: FileDescriptor) throws -> Int? {
        guard layout.slotCount > 0 else { return nil }
        try loadSlots(fd)
        guard case let .slot(slot) = cache.withLock({ $0.shadow.destination(forRewriteOf: index) }), try reserveSlots(fd) else {
            return nil
        }
        return slot
    }

    /// Gives both slots their backing space the first time one is used. Where that fails for
    /// lack of space, rewrites go in place, as in format 1, rather than fail (FORMAT.md §6).
    private func reserveSlots(_ fd: FileDescriptor) throws -> Bool {
        guard !cache.withLock({ $0.shadow.reserved }) else { return true }
        do {
            try io.fallocate(fd, mode: epochfs_FALLOC_FL_KEEP_SIZE, offset: 0, length: layout.headerOffset)
        } catch let error as SystemError where error.errno == ENOSPC || error.errno == EDQUOT {
            return false
        } catch let error as SystemError where error.errno == EOPNOTSUPP {
            // A backing file system without fallocate: the slot's write allocates it.
        }
        cache.withLock { $0.shadow.reserved = true }
        return true
    }

    /// Writes block `index`'s envelope into `slot` as the block's current copy, header and
    /// envelope in one write.
    private func writeSlot(_ slot: Int, _ sealed: UnsafeRawBufferPointer, block index: Int, fd: FileDescriptor) throws {
        let supersedes = try io.preadFully(fd, count: ContentLayout.nonceRange.count,
                                           at: layout.backingOffset(block: index) + ContentLayout.nonceRange.lowerBound)
        var bytes = layout.slotHeader(block: index, length: sealed.count, supersedes: supersedes)
        bytes.append(contentsOf: sealed)
        try io.pwriteFully(fd, bytes, at: layout.slotOffset(slot))
        cache.withLock { $0.shadow.wroteSlot(slot, block: index, supersedes: supersedes) }
    }

    /// Blocks just written in place: a slot that held one's current copy is its fallback now
    /// (the new copy's nonce is not the one the slot supersedes).
    private func noteWrittenInPlace(_ blocks: ClosedRange<Int>) {
        cache.withLock { _ = $0.shadow.wroteInPlace(blocks) }
    }

    /// Reads the slot headers, once per open.
    /// Reads the slot headers, once while the file id stays. What they hold counts as durable,
    /// so it is made so first (a daemon killed before its sync leaves it in the page cache).
    private func loadSlots(_ fd: FileDescriptor) throws {
        guard layout.slotCount > 0, cache.withLock({ $0.shadow.slots == nil }) else { return }
        var slots: [ShadowSlots.Copy?] = []
        for slot in 0..<layout.slotCount {
            let header = try io.preadFully(fd, count: ContentLayout.slotHeaderSize, at: layout.slotOffset(slot))
            guard let (block, _, supersedes) = layout.slotHeader(header) else {
                slots.append(nil)
                continue
            }
            let inPlace = try io.preadFully(fd, count: ContentLayout.nonceRange.count,
                                            at: layout.backingOffset(block: block) + ContentLayout.nonceRange.lowerBound)
            slots.append(ShadowSlots.Copy(block: block, supersedes: supersedes, written: -1, replacedIn: inPlace == supersedes ? nil : -1))
        }
        if slots.contains(where: { $0 != nil }) { try syncMarking(fd, dataOnly: true) }
        cache.withLock { cache in
            if cache.shadow.slots == nil { cache.shadow.slots = slots }
        }
    }

    /// Copies the full blocks whose current copy a slot holds durably in place (the slots are
    /// free once those copies are durable too).
    private func evictFullBlocks(_ fd: FileDescriptor) throws {
        let size = layout.plaintextSize(backingSize: try io.size(fd))
        for slot in cache.withLock({ $0.shadow.evictable(fullBlocks: size / layout.blockSize) }) {
            guard let copy = try readSlot(slot, fd: fd), copy.sealed.count == layout.sealedBlockSize else { continue }
            try io.pwriteFully(fd, copy.sealed, at: layout.backingOffset(block: copy.block))
            noteWrittenInPlace(copy.block...copy.block)
        }
    }

    /// Empties the slots that hold copies of blocks from `block` on (a truncate removed them).
    private func dropSlots(from block: Int, fd: FileDescriptor) throws {
        try loadSlots(fd)
        let doomed = cache.withLock { cache in
            (cache.shadow.slots ?? []).indices.filter { cache.shadow.slots![$0].map { $0.block >= block } ?? false }
        }
        for slot in doomed {
            try io.pwriteFully(fd, [UInt8](repeating: 0, count: ContentLayout.slotHeaderSize), at: layout.slotOffset(slot))
            cache.withLock { $0.shadow.emptied(slot) }
        }
    }

    /// The block index and envelope a slot holds; nil for an empty or malformed slot.
    private func readSlot(_ slot: Int, fd: FileDescriptor) throws -> (block: Int, sealed: [UInt8])? {
        let header = try io.preadFully(fd, count: ContentLayout.slotHeaderSize, at: layout.slotOffset(slot))
        guard let (block, length, _) = layout.slotHeader(header) else { return nil }
        let sealed = try io.preadFully(fd, count: length, at: layout.slotOffset(slot) + ContentLayout.slotHeaderSize)
        return sealed.count == length ? (block, sealed) : nil
    }

    /// fsync(2) or fdatasync(2) of the backing file, noting what it made durable. When no
    /// slot is left free for the next rewrite, the full blocks current in slots are copied in
    /// place and made durable by a second fdatasync, so that the next sync interval has a slot.
    public func sync(fd: FileDescriptor, dataOnly: Bool) throws {
        try syncMarking(fd, dataOnly: dataOnly)
        // Nearly always a slot is free: then no reader waits on the write lock for nothing.
        guard cache.withLock({ $0.shadow.isFull }) else { return }
        try access.withWriteLock {
            do {
                try freeSlots(fd)
            } catch let error as SystemError where error.errno == EBADF {
                return // synced through a read-only handle: the next write's sync does it
            }
        }
    }

    /// Right after a sync, when no slot is left free: copies the full blocks current in slots
    /// in place and makes them durable. The write lock must be held.
    private func freeSlots(_ fd: FileDescriptor) throws {
        guard cache.withLock({ $0.shadow.isFull }) else { return }
        try evictFullBlocks(fd)
        try syncMarking(fd, dataOnly: true)
    }

    private func syncMarking(_ fd: FileDescriptor, dataOnly: Bool) throws {
        let mark = cache.withLock { $0.shadow.beginSync() }
        try dataOnly ? io.fdatasync(fd) : io.fsync(fd)
        cache.withLock { $0.shadow.endSync(mark) }
    }

    // MARK: - Blocks

    /// The file id, creating the header of an empty backing file.
    private func prepareForWrite(_ fd: FileDescriptor, backingSize: Int) throws -> FileID {
        if backingSize >= layout.dataOffset { return try loadFileID(fd) }
        // Empty (or a header torn at creation, which held no data): start a new file id.
        let fileID = try FileID.random()
        try io.pwriteFully(fd, layout.header(fileID: fileID), at: layout.headerOffset)
        cache.withLock {
            $0.adopt(fileID)
            $0.shadow.slots = Array(repeating: nil, count: layout.slotCount) // a new file's slots are empty
        }
        return fileID
    }

    private func loadFileID(_ fd: FileDescriptor) throws -> FileID {
        if let known = cache.withLock({ $0.fileID }) { return known }
        return try readFileID(fd)
    }

    /// The file id in the backing file's header, adopted (a new one ends what was known of the old).
    private func readFileID(_ fd: FileDescriptor) throws -> FileID {
        let header = try io.preadFully(fd, count: ContentLayout.headerSize, at: layout.headerOffset)
        guard header.count == ContentLayout.headerSize else { throw SystemError("read", path: "file header", errno: EIO) }
        let version = UInt16(header[0]) << 8 | UInt16(header[1])
        guard version == layout.version else { throw ContentError.badFileHeader(version: version) }
        let fileID = try FileID(header[2...])
        cache.withLock { $0.adopt(fileID) }
        return fileID
    }

    /// Re-seals block `index` with its plaintext cut or zero-extended to `newLength`. It keeps
    /// stored bytes unless it cuts them (`protect` false: a truncate rewrites in place, so that
    /// making a file smaller never needs new space).
    private func rewriteBlock(_ index: Int, fileID: FileID, fd: FileDescriptor, currentSize: Int, newLength: Int, epoch: UInt32,
                              protect: Bool = true) throws {
        let existing = max(0, min(layout.blockSize, currentSize - index * layout.blockSize))
        var (plain, wasHole) = try readBlock(index, fileID: fileID, fd: fd, length: existing)
        if plain.count > newLength { plain.removeLast(plain.count - newLength) }
        if plain.count < newLength { plain += [UInt8](repeating: 0, count: newLength - plain.count) }
        try writeBlock(index, plain, fileID: fileID, fd: fd, epoch: epoch, keepsStoredBytes: protect && !wasHole)
    }

    /// Seals `plain` as block `index` under `epoch` and stores it (`store`).
    private func writeBlock(_ index: Int, _ plain: [UInt8], fileID: FileID, fd: FileDescriptor, epoch: UInt32, keepsStoredBytes: Bool) throws {
        var sealed = [UInt8](repeating: 0, count: plain.count + Envelope.overhead)
        var key = try blockKey(epoch, fileID: fileID)
        try plain.withUnsafeBytes { p in
            try sealed.withUnsafeMutableBytes { try sealBlock(p, block: index, key: &key, into: $0) }
        }
        try sealed.withUnsafeBytes { try store($0, block: index, fd: fd, keepsStoredBytes: keepsStoredBytes) }
    }

    /// The `length` plaintext bytes of block `index` (zeros past the end of the backing file),
    /// and whether it is a hole.
    private func readBlock(_ index: Int, fileID: FileID, fd: FileDescriptor, length: Int) throws -> (plain: [UInt8], wasHole: Bool) {
        guard length > 0 else { return ([], true) }
        let sealed = try io.preadFully(fd, count: length + Envelope.overhead, at: layout.backingOffset(block: index))
        guard sealed.count > Envelope.overhead else { return ([UInt8](repeating: 0, count: length), true) }
        var plain = [UInt8](repeating: 0, count: length)
        var key: BlockKey?
        let wasHole = try sealed.withUnsafeBytes { s in
            try plain.withUnsafeMutableBytes { p in
                try openBlock(index, fileID: fileID, fd: fd, sealed: s, into: UnsafeMutableRawBufferPointer(rebasing: p[0..<(s.count - Envelope.overhead)]),
                              key: &key)
            }
        }
        return (plain, wasHole)
    }

    /// The key and AAD of one key id for this file's blocks, kept from block to block: the
    /// blocks of one read or write are nearly always under one epoch.
    private struct BlockKey {
        let key: AESGCMKey
        var aad: StorageAAD
    }

    private func blockKey(_ keyID: UInt32, fileID: FileID) throws -> BlockKey {
        BlockKey(key: try fileKey(epoch: keyID, fileID: fileID), aad: StorageAAD(keyID: keyID, volumeID: volume.keys.volumeID, fileID: fileID))
    }

    /// Opens one stored block into `output` (its plaintext length) with the key of its key id:
    /// the one in `key` if that is it, else a new one, left in `key` for the next block. The
    /// block's current copy is in a shadow slot when the slot supersedes the copy in place still
    /// there; else in place, where all zeros is a hole and reads as zeros (docs/FORMAT.md §6). A
    /// copy in place that does not open may have been torn by a power cut, or left short of a
    /// size that grew: then a shorter copy in place, or the slot's copy, is what a sync made
    /// durable. Returns whether the block was a hole.
    @discardableResult
    private func openBlock(_ index: Int, fileID: FileID, fd: FileDescriptor, sealed: UnsafeRawBufferPointer,
                           into output: UnsafeMutableRawBufferPointer, key: inout BlockKey?) throws -> Bool {
        if let current = currentSlot(of: index, inPlace: sealed), try openSlotCopy(current, index, fileID: fileID, fd: fd, into: output, key: &key) {
            volume.counters.blocksRead.add(1, ordering: .relaxed)
            return false
        }
        if sealed.allSatisfy({ $0 == 0 }) {
            output.initializeMemory(as: UInt8.self, repeating: 0)
            return true
        }
        do {
            try openEnvelope(sealed, block: index, fileID: fileID, into: output, key: &key)
        } catch let error as EnvelopeError {
            guard try openShorterCopy(index, fileID: fileID, sealed: sealed, into: output, key: &key)
                    || cache.withLock({ $0.shadow.slot(of: index) }).map({ try openSlotCopy($0.slot, index, fileID: fileID, fd: fd, into: output, key: &key) }) ?? false
            else {
                volume.counters.authenticationFailures.add(1, ordering: .relaxed)
                throw ContentError.block(index: index, error)
            }
        }
        volume.counters.blocksRead.add(1, ordering: .relaxed)
        return false
    }

    private func openEnvelope(_ sealed: UnsafeRawBufferPointer, block index: Int, fileID: FileID, into output: UnsafeMutableRawBufferPointer,
                              key: inout BlockKey?) throws {
        let keyID = try Envelope.keyID(of: sealed)
        if key?.aad.keyID != keyID { key = try blockKey(keyID, fileID: fileID) }
        let aead = key!.key
        try key!.aad.withBlock(UInt64(index)) { try Envelope.open(sealed, keyID: keyID, key: aead, aad: $0, into: output) }
    }

    /// Opens the copy of block `index` in `slot` into `output`: cut to its length, or
    /// zero-padded to it where the size grew past the copy (a cut that kept the growth of the
    /// file by an append no sync acknowledged, but not the append). False if it does not open.
    private func openSlotCopy(_ slot: Int, _ index: Int, fileID: FileID, fd: FileDescriptor, into output: UnsafeMutableRawBufferPointer,
                              key: inout BlockKey?) throws -> Bool {
        guard let copy = try readSlot(slot, fd: fd), copy.block == index else { return false }
        var plain = [UInt8](repeating: 0, count: copy.sealed.count - Envelope.overhead)
        do {
            try copy.sealed.withUnsafeBytes { s in try plain.withUnsafeMutableBytes { try openEnvelope(s, block: index, fileID: fileID, into: $0, key: &key) } }
        } catch is EnvelopeError {
            return false
        }
        output.initializeMemory(as: UInt8.self, repeating: 0)
        plain.withUnsafeBytes { output.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(output.count))) }
        return true
    }

    /// Opens a copy in place followed by zeros, at its own length, zero-padded to `output`: what
    /// a cut leaves when it kept the growth of the file by an unacknowledged append but not
    /// the append's copy in a slot. The copy ends in its tag, which may end in zero bytes too.
    private func openShorterCopy(_ index: Int, fileID: FileID, sealed: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer,
                                 key: inout BlockKey?) -> Bool {
        guard layout.slotCount > 0, let lastNonZero = sealed.lastIndex(where: { $0 != 0 }) else { return false }
        for length in (lastNonZero + 1)..<min(lastNonZero + 1 + AESGCMKey.tagSize, sealed.count) where length > Envelope.overhead {
            let plainLength = length - Envelope.overhead
            do {
                try openEnvelope(UnsafeRawBufferPointer(rebasing: sealed[0..<length]), block: index, fileID: fileID,
                                 into: UnsafeMutableRawBufferPointer(rebasing: output[0..<plainLength]), key: &key)
            } catch {
                continue
            }
            UnsafeMutableRawBufferPointer(rebasing: output[plainLength...]).initializeMemory(as: UInt8.self, repeating: 0)
            return true
        }
        return false
    }

    private func sealBlock(_ plain: UnsafeRawBufferPointer, block: Int, key: inout BlockKey, into output: UnsafeMutableRawBufferPointer) throws {
        let aead = key.key, keyID = key.aad.keyID
        try key.aad.withBlock(UInt64(block)) { try Envelope.seal(plaintext: plain, keyID: keyID, key: aead, aad: $0, into: output) }
        volume.counters.blocksWritten.add(1, ordering: .relaxed)
    }

    private func fileKey(epoch: UInt32, fileID: FileID) throws -> AESGCMKey {
        let generation = volume.keys.generation
        if let key = cache.withLock({ $0.fileKeysGeneration == generation ? $0.fileKeys[epoch] : nil }) { return key }
        let key = try volume.keys.fileKey(epoch: epoch, fileID: fileID)
        cache.withLock { cache in
            if cache.fileKeysGeneration != generation { (cache.fileKeys, cache.fileKeysGeneration) = ([:], generation) }
            cache.fileKeys[epoch] = key
        }
        return key
    }
}
