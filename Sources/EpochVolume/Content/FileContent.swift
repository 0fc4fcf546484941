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

        /// A truncate to zero ends a file id; the keys derived from it go with it.
        mutating func adopt(_ id: FileID?) {
            guard id != fileID else { return }
            fileID = id
            fileKeys = [:]
        }
    }

    public init(volume: LiveVolume) {
        self.volume = volume
        self.layout = ContentLayout(blockSize: volume.keys.blockSize)
    }

    private var io: any BackingIO { volume.io }

    /// Re-reads the file header at open, so a header changed underneath (by anyone with access
    /// to the backing dir) is noticed and never trusted from an earlier open.
    public func reloadHeader(fd: FileDescriptor) throws {
        try access.withWriteLock {
            cache.withLock { $0.adopt(nil) }
            if try io.size(fd) >= ContentLayout.headerSize { _ = try loadFileID(fd) }
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
            let blockSize = layout.blockSize
            let first = offset / blockSize, last = (end - 1) / blockSize
            let start = layout.backingOffset(block: first)
            let sealedCount = min(backing, layout.backingOffset(block: last + 1)) - start
            // A read this large is the kernel's readahead of a sequential reader. Its blocks come
            // straight from the disk, not through a second, ciphertext copy of the file in the
            // page cache (bench/RESULTS.md: a fifth to a third less daemon CPU per byte).
            if count >= Self.streamingRequestSize, let delivered = try DirectRead.with(io: io, fd: fd, offset: start, count: sealedCount, { sealed in
                try openBlocks(sealed, blocks: first...last, range: offset..<end, fileID: fileID, deliver)
            }) {
                return delivered
            }
            return try ScratchPool.shared.with(size: sealedCount) { sealed in
                guard try io.preadFully(fd, into: sealed, at: start) == sealedCount else {
                    throw SystemError("read", path: "backing file changed size while read", errno: EIO)
                }
                return try openBlocks(UnsafeRawBufferPointer(sealed), blocks: first...last, range: offset..<end, fileID: fileID, deliver)
            }
        }
    }

    /// Opens `blocks`, whose envelopes `sealed` holds back to back, and hands `deliver` the
    /// plaintext bytes of `range`.
    private func openBlocks<R>(_ sealed: UnsafeRawBufferPointer, blocks: ClosedRange<Int>, range: Range<Int>, fileID: FileID,
                               _ deliver: (UnsafeRawBufferPointer) throws -> R) throws -> R {
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
                    try openBlock(block, fileID: fileID, sealed: blockSealed, into: target, key: &key)
                } else {
                    // Only part of this block was asked for: open it aside, copy the part.
                    try openBlock(block, fileID: fileID, sealed: blockSealed,
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
            let first = offset / blockSize
            let rewritesTail = size % blockSize != 0 && first > size / blockSize
            try reserve([rewritesTail ? blockRange(size / blockSize) : nil,
                         layout.backingOffset(block: first)
                            ..< min(layout.backingSize(plaintextSize: max(size, end)), layout.backingOffset(block: (end - 1) / blockSize + 1))],
                        in: fd, backing)
            let fileID = try prepareForWrite(fd, backingSize: Int(backing.st_size))
            // A partial last block before the written range becomes a full block of zeros-padded data.
            if rewritesTail {
                try rewriteBlock(size / blockSize, fileID: fileID, fd: fd, currentSize: size, newLength: blockSize, epoch: epoch)
            }
            let last = (end - 1) / blockSize
            var key = try blockKey(epoch, fileID: fileID)
            let sealedCapacity = (last - first + 1) * layout.sealedBlockSize
            try ScratchPool.shared.with(size: sealedCapacity + blockSize) { scratch in
                let spare = UnsafeMutableRawBufferPointer(rebasing: scratch[sealedCapacity..<(sealedCapacity + blockSize)])
                var sealedLength = 0
                for block in first...last {
                    let blockStart = block * blockSize
                    let lo = max(offset, blockStart) - blockStart, hi = min(end, blockStart + blockSize) - blockStart
                    let incoming = UnsafeRawBufferPointer(rebasing: data[(blockStart + lo - offset)..<(blockStart + hi - offset)])
                    let existing = max(0, min(blockSize, size - blockStart))
                    let plain: UnsafeRawBufferPointer
                    if lo == 0 && hi >= existing {
                        plain = incoming // the write replaces the whole block
                    } else {
                        // Read-modify-write: the old bytes, zeros up to the write, the new bytes.
                        let old = try readBlock(block, fileID: fileID, fd: fd, length: existing)
                        let length = max(existing, hi)
                        spare.initializeMemory(as: UInt8.self, repeating: 0)
                        old.withUnsafeBytes { spare.copyMemory(from: $0) }
                        UnsafeMutableRawBufferPointer(rebasing: spare[lo..<hi]).copyMemory(from: incoming)
                        plain = UnsafeRawBufferPointer(rebasing: spare[0..<length])
                    }
                    try sealBlock(plain, block: block, key: &key,
                                  into: UnsafeMutableRawBufferPointer(rebasing: scratch[sealedLength..<(sealedLength + plain.count + Envelope.overhead)]))
                    sealedLength += plain.count + Envelope.overhead
                }
                try io.pwriteFully(fd, UnsafeRawBufferPointer(rebasing: scratch[0..<sealedLength]), at: layout.backingOffset(block: first))
                if data.count >= Self.streamingRequestSize {
                    // A streaming writer: have the disk start on these blocks now rather than all
                    // at its fsync, when the kernel would otherwise begin (bench/RESULTS.md).
                    io.syncFileRange(fd, offset: layout.backingOffset(block: first), length: sealedLength)
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
            if newSize % blockSize != 0 {
                try rewriteBlock(newSize / blockSize, fileID: fileID, fd: fd, currentSize: size, newLength: newSize % blockSize,
                                 epoch: epoch)
            }
        } else if size % blockSize != 0 {
            let block = size / blockSize
            try rewriteBlock(block, fileID: fileID, fd: fd, currentSize: size,
                             newLength: min(blockSize, newSize - block * blockSize), epoch: epoch)
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
            var plain = try readBlock(block, fileID: fileID, fd: fd, length: length)
            for index in max(range.lowerBound, blockStart)..<min(range.upperBound, blockStart + length) { plain[index - blockStart] = 0 }
            try writeBlock(block, plain, fileID: fileID, fd: fd, epoch: epoch)
        }
        if firstWhole < endWhole {
            let start = layout.backingOffset(block: firstWhole)
            let stop = min(layout.backingOffset(block: endWhole), layout.backingSize(plaintextSize: size))
            let mode = punch ? epochfs_FALLOC_FL_PUNCH_HOLE | epochfs_FALLOC_FL_KEEP_SIZE : epochfs_FALLOC_FL_ZERO_RANGE | epochfs_FALLOC_FL_KEEP_SIZE
            try io.fallocate(fd, mode: mode, offset: start, length: stop - start)
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
    /// every range and lets EOPNOTSUPP reach the caller, who may fall back to writing zeros.
    private func reserve(_ ranges: [Range<Int>?], in fd: FileDescriptor, _ backing: stat, forFallocate: Bool = false) throws {
        let size = Int(backing.st_size), sparse = Int(backing.st_blocks) * 512 < size
        var wanted = ranges.compactMap { $0 }.filter { !$0.isEmpty && (forFallocate || sparse || $0.upperBound > size) }
        if size < ContentLayout.headerSize { wanted.append(0..<ContentLayout.headerSize) }
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
        } catch let error as SystemError where error.errno == EOPNOTSUPP && !forFallocate {
            // A backing file system without fallocate: writes are as safe as it makes them.
        }
    }

    // MARK: - Blocks

    /// The file id, creating the header of an empty backing file.
    private func prepareForWrite(_ fd: FileDescriptor, backingSize: Int) throws -> FileID {
        if backingSize >= ContentLayout.headerSize { return try loadFileID(fd) }
        // Empty (or a header torn at creation, which held no data): start a new file id.
        let fileID = try FileID.random()
        try io.pwriteFully(fd, ContentLayout.header(fileID: fileID), at: 0)
        cache.withLock { $0.adopt(fileID) }
        return fileID
    }

    private func loadFileID(_ fd: FileDescriptor) throws -> FileID {
        if let known = cache.withLock({ $0.fileID }) { return known }
        let header = try io.preadFully(fd, count: ContentLayout.headerSize, at: 0)
        guard header.count == ContentLayout.headerSize else { throw SystemError("read", path: "file header", errno: EIO) }
        let version = UInt16(header[0]) << 8 | UInt16(header[1])
        guard version == ContentLayout.headerVersion else { throw ContentError.badFileHeader(version: version) }
        let fileID = try FileID(header[2...])
        cache.withLock { $0.adopt(fileID) }
        return fileID
    }

    /// Re-seals block `index` with its plaintext cut or zero-extended to `newLength`.
    private func rewriteBlock(_ index: Int, fileID: FileID, fd: FileDescriptor, currentSize: Int, newLength: Int, epoch: UInt32) throws {
        let existing = max(0, min(layout.blockSize, currentSize - index * layout.blockSize))
        var plain = try readBlock(index, fileID: fileID, fd: fd, length: existing)
        if plain.count > newLength { plain.removeLast(plain.count - newLength) }
        if plain.count < newLength { plain += [UInt8](repeating: 0, count: newLength - plain.count) }
        try writeBlock(index, plain, fileID: fileID, fd: fd, epoch: epoch)
    }

    /// Seals `plain` as block `index` under `epoch` and writes it in place.
    private func writeBlock(_ index: Int, _ plain: [UInt8], fileID: FileID, fd: FileDescriptor, epoch: UInt32) throws {
        var sealed = [UInt8](repeating: 0, count: plain.count + Envelope.overhead)
        var key = try blockKey(epoch, fileID: fileID)
        try plain.withUnsafeBytes { p in
            try sealed.withUnsafeMutableBytes { try sealBlock(p, block: index, key: &key, into: $0) }
        }
        try io.pwriteFully(fd, sealed, at: layout.backingOffset(block: index))
    }

    /// The `length` plaintext bytes of block `index` (zeros past the end of the backing file).
    private func readBlock(_ index: Int, fileID: FileID, fd: FileDescriptor, length: Int) throws -> [UInt8] {
        guard length > 0 else { return [] }
        let sealed = try io.preadFully(fd, count: length + Envelope.overhead, at: layout.backingOffset(block: index))
        guard sealed.count > Envelope.overhead else { return [UInt8](repeating: 0, count: length) }
        var plain = [UInt8](repeating: 0, count: length)
        var key: BlockKey?
        try sealed.withUnsafeBytes { s in
            try plain.withUnsafeMutableBytes { p in
                try openBlock(index, fileID: fileID, sealed: s, into: UnsafeMutableRawBufferPointer(rebasing: p[0..<(s.count - Envelope.overhead)]),
                              key: &key)
            }
        }
        return plain
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
    /// the one in `key` if that is it, else a new one, left in `key` for the next block. All
    /// zeros is a hole and reads as zeros (docs/FORMAT.md §6, holes).
    private func openBlock(_ index: Int, fileID: FileID, sealed: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer,
                           key: inout BlockKey?) throws {
        if sealed.allSatisfy({ $0 == 0 }) {
            output.initializeMemory(as: UInt8.self, repeating: 0)
            return
        }
        do {
            let keyID = try Envelope.keyID(of: sealed)
            if key?.aad.keyID != keyID { key = try blockKey(keyID, fileID: fileID) }
            let aead = key!.key
            try key!.aad.withBlock(UInt64(index)) { try Envelope.open(sealed, keyID: keyID, key: aead, aad: $0, into: output) }
        } catch let error as EnvelopeError {
            volume.counters.authenticationFailures.add(1, ordering: .relaxed)
            throw ContentError.block(index: index, error)
        }
        volume.counters.blocksRead.add(1, ordering: .relaxed)
    }

    private func sealBlock(_ plain: UnsafeRawBufferPointer, block: Int, key: inout BlockKey, into output: UnsafeMutableRawBufferPointer) throws {
        let aead = key.key, keyID = key.aad.keyID
        try key.aad.withBlock(UInt64(block)) { try Envelope.seal(plaintext: plain, keyID: keyID, key: aead, aad: $0, into: output) }
        volume.counters.blocksWritten.add(1, ordering: .relaxed)
    }

    private func fileKey(epoch: UInt32, fileID: FileID) throws -> AESGCMKey {
        if let key = cache.withLock({ $0.fileKeys[epoch] }) { return key }
        let key = try volume.keys.fileKey(epoch: epoch, fileID: fileID)
        cache.withLock { $0.fileKeys[epoch] = key }
        return key
    }
}
