import CLinux
import EpochCrypto
import EpochFormat
import EpochIO
import Glibc

/// fallocate(2) on the plaintext, and the reservation that makes a full disk fail a call before it
/// changes a byte (docs/FORMAT.md §6).
extension FileContent {
    /// fallocate(2) on the plaintext (mode as in the system call): reserves the backing space
    /// of [offset, offset + length), ciphertext overhead included, so later writes into the
    /// range cannot fail for lack of space; without KEEP_SIZE the file grows to cover it.
    /// PUNCH_HOLE (with KEEP_SIZE) and ZERO_RANGE make the range read as zeros; other modes
    /// are EOPNOTSUPP.
    public func allocate(fd: FileDescriptor, mode: Int32, offset: Int, length: Int) throws {
        noteChanged()
        let keepSize = mode & epochfs_FALLOC_FL_KEEP_SIZE != 0
        let zeroing = mode & ~epochfs_FALLOC_FL_KEEP_SIZE
        guard offset >= 0, length > 0 else { throw SystemError("fallocate", path: "", errno: EINVAL) }
        guard zeroing == 0 || zeroing == epochfs_FALLOC_FL_ZERO_RANGE || (zeroing == epochfs_FALLOC_FL_PUNCH_HOLE && keepSize) else {
            throw SystemError("fallocate", path: "", errno: EOPNOTSUPP)
        }
        try volume.sealing { epoch in try exclusively {
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
    func zero(_ range: Range<Int>, fd: FileDescriptor, size: Int, epoch: Epoch, punch: Bool) throws {
        let blockSize = layout.blockSize
        let fileID = try loadFileID(fd)
        try requireCommittedSize(size)
        let firstWhole = (range.lowerBound + blockSize - 1) / blockSize
        // The last block counts as whole when the range reaches the end of the file.
        let endWhole = range.upperBound == size ? (size + blockSize - 1) / blockSize : range.upperBound / blockSize
        for block in Set([range.lowerBound / blockSize, (range.upperBound - 1) / blockSize]) where block < firstWhole || block >= endWhole {
            let blockStart = block * blockSize
            let length = min(blockSize, size - blockStart)
            var (plain, wasHole) = try readBlock(block, fileID: fileID, fd: fd, length: length)
            guard !wasHole else { continue } // zeros already
            for index in max(range.lowerBound, blockStart)..<min(range.upperBound, blockStart + length) { plain[index - blockStart] = 0 }
            // It keeps the bytes outside the range: through a slot where there is room for one.
            try writeBlock(block, plain, fileID: fileID, fd: fd, epoch: epoch, keepsStoredBytes: true, makeRoom: true)
        }
        if firstWhole < endWhole {
            try commitShrink(fd, holesFrom: firstWhole)
            let start = layout.backingOffset(block: firstWhole)
            let stop = min(layout.backingOffset(block: endWhole), layout.backingSize(plaintextSize: size))
            let mode = punch ? epochfs_FALLOC_FL_PUNCH_HOLE | epochfs_FALLOC_FL_KEEP_SIZE : epochfs_FALLOC_FL_ZERO_RANGE | epochfs_FALLOC_FL_KEEP_SIZE
            try io.fallocate(fd, mode: mode, offset: start, length: stop - start)
            noteWrittenInPlace(firstWhole...(endWhole - 1)) // holes now: copies in slots are stale
        }
    }

    /// The stored bytes of block `index` at its full size.
    func blockRange(_ index: Int) -> Range<Int> {
        layout.backingOffset(block: index)..<layout.backingOffset(block: index + 1)
    }

    /// Reserves the backing blocks of `ranges` (KEEP_SIZE), and of the file header of a file
    /// that has none yet, before anything is written, so that a full disk fails the call
    /// before it changes a byte; the gaps between them stay holes. For a write or truncate,
    /// nothing is done for a range inside a file with no holes (those blocks are allocated
    /// already), nor where the backing file system has no fallocate; `forFallocate` reserves
    /// every range, and both shadow slots, and lets EOPNOTSUPP reach the caller, who may fall
    /// back to writing zeros.
    func reserve(_ ranges: [Range<Int>?], in fd: FileDescriptor, _ backing: stat, forFallocate: Bool = false) throws {
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
}
