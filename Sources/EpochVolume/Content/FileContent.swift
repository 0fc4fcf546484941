import EpochCrypto
import EpochFormat
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
    private let keys: VolumeKeys
    private let counters: VolumeCounters
    private let layout: ContentLayout
    private let access = ReadWriteLock()
    private let cache = Mutex(Cache())

    private struct Cache {
        /// nil until read from (or written to) the backing file's header.
        private(set) var fileID: FileID?
        /// One initialised AEAD per epoch for `fileID`, derived once (envelopes.md B.2).
        var fileKeys: [UInt32: AESGCMKey] = [:]

        /// A truncate to zero ends a file id; the keys derived from it go with it.
        mutating func adopt(_ id: FileID?) {
            guard id != fileID else { return }
            fileID = id
            fileKeys = [:]
        }
    }

    public init(keys: VolumeKeys, counters: VolumeCounters) {
        self.keys = keys
        self.counters = counters
        self.layout = ContentLayout(blockSize: keys.blockSize)
    }

    /// Re-reads the file header at open, so a header changed underneath (by anyone with access
    /// to the backing dir) is noticed and never trusted from an earlier open.
    public func reloadHeader(fd: Int32) throws {
        try access.withWriteLock {
            cache.withLock { $0.adopt(nil) }
            if try backingSize(fd) >= ContentLayout.headerSize { _ = try loadFileID(fd) }
        }
    }

    /// The plaintext size, from the backing file's size.
    public func size(fd: Int32) throws -> Int {
        layout.plaintextSize(backingSize: try backingSize(fd))
    }

    public func read(fd: Int32, offset: Int, count: Int) throws -> [UInt8] {
        try access.withReadLock {
            let backing = try backingSize(fd)
            let size = layout.plaintextSize(backingSize: backing)
            guard offset < size, count > 0 else { return [] }
            let end = min(offset + count, size)
            let fileID = try loadFileID(fd)
            let first = offset / layout.blockSize
            let last = (end - 1) / layout.blockSize
            let start = layout.backingOffset(block: first)
            let sealed = try preadFully(fd, count: min(backing, layout.backingOffset(block: last + 1)) - start, at: start)
            var output = [UInt8](repeating: 0, count: end - offset)
            try output.withUnsafeMutableBytes { out in
                try sealed.withUnsafeBytes { all in
                    for block in first...last {
                        let plain = try openBlock(block, fileID: fileID,
                                                  sealed: slice(all, from: (block - first) * layout.sealedBlockSize))
                        let blockStart = block * layout.blockSize
                        let lo = max(offset, blockStart), hi = min(end, blockStart + plain.count)
                        if hi > lo {
                            plain.withUnsafeBytes { p in
                                UnsafeMutableRawBufferPointer(rebasing: out[(lo - offset)..<(hi - offset)])
                                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: p[(lo - blockStart)..<(hi - blockStart)]))
                            }
                        }
                    }
                }
            }
            return output
        }
    }

    /// Writes `data` at `offset`, or at the end of the file when `offset` is nil (O_APPEND).
    /// Returns the offset written at.
    @discardableResult
    public func write(fd: Int32, offset requested: Int?, data: UnsafeRawBufferPointer) throws -> Int {
        try access.withWriteLock {
            let (fileID, size) = try prepareForWrite(fd)
            let offset = requested ?? size
            guard data.count > 0 else { return offset }
            let end = offset + data.count
            let blockSize = layout.blockSize
            let first = offset / blockSize
            // A partial last block before the written range becomes a full block of zeros-padded data.
            if size % blockSize != 0, first > size / blockSize {
                try rewriteBlock(size / blockSize, fileID: fileID, fd: fd, currentSize: size, newLength: blockSize)
            }
            let last = (end - 1) / blockSize
            var sealed = [UInt8](repeating: 0, count: (last - first + 1) * layout.sealedBlockSize)
            let epoch = keys.activeEpoch
            let fileKey = try self.fileKey(epoch: epoch, fileID: fileID)
            var sealedLength = 0
            for block in first...last {
                let blockStart = block * blockSize
                let lo = max(offset, blockStart) - blockStart, hi = min(end, blockStart + blockSize) - blockStart
                let existing = max(0, min(blockSize, size - blockStart))
                var plain: [UInt8]
                if lo == 0 && hi >= existing {
                    plain = Array(UnsafeRawBufferPointer(rebasing: data[(blockStart + lo - offset)..<(blockStart + hi - offset)]))
                } else {
                    plain = try readBlock(block, fileID: fileID, fd: fd, length: existing)
                    if plain.count < hi { plain += [UInt8](repeating: 0, count: hi - plain.count) }
                    plain.withUnsafeMutableBytes {
                        UnsafeMutableRawBufferPointer(rebasing: $0[lo..<hi])
                            .copyMemory(from: UnsafeRawBufferPointer(rebasing: data[(blockStart + lo - offset)..<(blockStart + hi - offset)]))
                    }
                }
                try seal(plain, block: block, epoch: epoch, key: fileKey, fileID: fileID, into: &sealed, at: sealedLength)
                sealedLength += plain.count + Envelope.overhead
            }
            try pwriteFully(fd, sealed, count: sealedLength, at: layout.backingOffset(block: first))
            return offset
        }
    }

    /// Sets the plaintext size: shrinking cuts the last block, growing adds zeros (holes).
    public func truncate(fd: Int32, to newSize: Int) throws {
        try access.withWriteLock {
            let size = try self.size(fd: fd)
            guard newSize != size else { return }
            guard newSize > 0 else {
                try ftruncateChecked(fd, 0)
                cache.withLock { $0.adopt(nil) } // the next write starts a new file id
                return
            }
            let (fileID, _) = try prepareForWrite(fd)
            let blockSize = layout.blockSize
            if newSize < size {
                if newSize % blockSize != 0 {
                    try rewriteBlock(newSize / blockSize, fileID: fileID, fd: fd, currentSize: size, newLength: newSize % blockSize)
                }
            } else if size % blockSize != 0 {
                let block = size / blockSize
                try rewriteBlock(block, fileID: fileID, fd: fd, currentSize: size,
                                 newLength: min(blockSize, newSize - block * blockSize))
            }
            try ftruncateChecked(fd, layout.backingSize(plaintextSize: newSize))
        }
    }

    // MARK: - Blocks

    /// The file id, creating the header of an empty backing file; and the plaintext size.
    private func prepareForWrite(_ fd: Int32) throws -> (FileID, Int) {
        let backing = try backingSize(fd)
        if backing >= ContentLayout.headerSize {
            return (try loadFileID(fd), layout.plaintextSize(backingSize: backing))
        }
        // Empty (or a header torn at creation, which held no data): start a new file id.
        let fileID = try FileID.random()
        try pwriteFully(fd, ContentLayout.header(fileID: fileID), count: ContentLayout.headerSize, at: 0)
        cache.withLock { $0.adopt(fileID) }
        return (fileID, 0)
    }

    private func loadFileID(_ fd: Int32) throws -> FileID {
        if let known = cache.withLock({ $0.fileID }) { return known }
        let header = try preadFully(fd, count: ContentLayout.headerSize, at: 0)
        guard header.count == ContentLayout.headerSize else { throw SystemError("read", path: "file header", errno: EIO) }
        let version = UInt16(header[0]) << 8 | UInt16(header[1])
        guard version == ContentLayout.headerVersion else { throw ContentError.badFileHeader(version: version) }
        let fileID = try FileID(header[2...])
        cache.withLock { $0.adopt(fileID) }
        return fileID
    }

    /// Re-seals block `index` with its plaintext cut or zero-extended to `newLength`.
    private func rewriteBlock(_ index: Int, fileID: FileID, fd: Int32, currentSize: Int, newLength: Int) throws {
        let existing = max(0, min(layout.blockSize, currentSize - index * layout.blockSize))
        var plain = try readBlock(index, fileID: fileID, fd: fd, length: existing)
        if plain.count > newLength { plain.removeLast(plain.count - newLength) }
        if plain.count < newLength { plain += [UInt8](repeating: 0, count: newLength - plain.count) }
        let epoch = keys.activeEpoch
        var sealed = [UInt8](repeating: 0, count: newLength + Envelope.overhead)
        try seal(plain, block: index, epoch: epoch, key: try fileKey(epoch: epoch, fileID: fileID), fileID: fileID,
                 into: &sealed, at: 0)
        try pwriteFully(fd, sealed, count: sealed.count, at: layout.backingOffset(block: index))
    }

    /// The `length` plaintext bytes of block `index` (zeros past the end of the backing file).
    private func readBlock(_ index: Int, fileID: FileID, fd: Int32, length: Int) throws -> [UInt8] {
        guard length > 0 else { return [] }
        let sealed = try preadFully(fd, count: length + Envelope.overhead, at: layout.backingOffset(block: index))
        let plain = try sealed.withUnsafeBytes { try openBlock(index, fileID: fileID, sealed: $0) }
        return plain.count >= length ? plain : plain + [UInt8](repeating: 0, count: length - plain.count)
    }

    /// Opens one stored block. All zeros is a hole and reads as zeros (envelopes.md B.6).
    private func openBlock(_ index: Int, fileID: FileID, sealed: UnsafeRawBufferPointer) throws -> [UInt8] {
        guard sealed.count > 0 else { return [] }
        if sealed.allSatisfy({ $0 == 0 }) { return [UInt8](repeating: 0, count: max(0, sealed.count - Envelope.overhead)) }
        guard sealed.count >= Envelope.overhead else { throw ContentError.block(index: index, .shortInput(length: sealed.count)) }
        var plain = [UInt8](repeating: 0, count: sealed.count - Envelope.overhead)
        let location = BlockLocation(volumeID: keys.volumeID, fileID: fileID, blockIndex: UInt64(index))
        do {
            try plain.withUnsafeMutableBytes { out in
                try Envelope.open(sealed, lookup: { try self.fileKey(epoch: $0, fileID: fileID) },
                                  aad: { StorageEnvelope.aad(keyID: $0, location: location) }, into: out)
            }
        } catch let error as EnvelopeError {
            counters.authenticationFailures.add(1, ordering: .relaxed)
            throw ContentError.block(index: index, error)
        }
        counters.blocksRead.add(1, ordering: .relaxed)
        return plain
    }

    private func seal(_ plain: [UInt8], block: Int, epoch: UInt32, key: AESGCMKey, fileID: FileID,
                      into buffer: inout [UInt8], at position: Int) throws {
        let location = BlockLocation(volumeID: keys.volumeID, fileID: fileID, blockIndex: UInt64(block))
        try plain.withUnsafeBytes { p in
            try StorageEnvelope.aad(keyID: epoch, location: location).withUnsafeBytes { aad in
                try buffer.withUnsafeMutableBytes { out in
                    try Envelope.seal(plaintext: p, keyID: epoch, key: key, aad: aad,
                                      into: UnsafeMutableRawBufferPointer(rebasing: out[position..<(position + plain.count + Envelope.overhead)]))
                }
            }
        }
        counters.blocksWritten.add(1, ordering: .relaxed)
    }

    private func fileKey(epoch: UInt32, fileID: FileID) throws -> AESGCMKey {
        if let key = cache.withLock({ $0.fileKeys[epoch] }) { return key }
        let key = try AESGCMKey(StorageEnvelope.fileKey(storageDEK: try keys.storageDEK(epoch: epoch),
                                                        volumeID: keys.volumeID, fileID: fileID))
        cache.withLock { $0.fileKeys[epoch] = key }
        return key
    }

    private func slice(_ all: UnsafeRawBufferPointer, from start: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: all[min(start, all.count)..<min(start + layout.sealedBlockSize, all.count)])
    }
}

// MARK: - System calls on backing files

func backingSize(_ fd: Int32) throws -> Int {
    var info = stat()
    guard fstat(fd, &info) == 0 else { throw SystemError("fstat", path: "backing file") }
    return Int(info.st_size)
}

func preadFully(_ fd: Int32, count: Int, at offset: Int) throws -> [UInt8] {
    guard count > 0 else { return [] }
    var buffer = [UInt8](repeating: 0, count: count)
    var filled = 0
    try buffer.withUnsafeMutableBytes { raw in
        while filled < count {
            let n = retryingEINTR { pread(fd, raw.baseAddress! + filled, count - filled, off_t(offset + filled)) }
            guard n >= 0 else { throw SystemError("read", path: "backing file") }
            if n == 0 { break }
            filled += n
        }
    }
    if filled < count { buffer.removeLast(count - filled) }
    return buffer
}

func pwriteFully(_ fd: Int32, _ bytes: [UInt8], count: Int, at offset: Int) throws {
    var written = 0
    try bytes.withUnsafeBytes { raw in
        while written < count {
            let n = retryingEINTR { pwrite(fd, raw.baseAddress! + written, count - written, off_t(offset + written)) }
            guard n > 0 else { throw SystemError("write", path: "backing file") }
            written += n
        }
    }
}

func ftruncateChecked(_ fd: Int32, _ size: Int) throws {
    guard retryingEINTR({ ftruncate(fd, off_t(size)) }) == 0 else { throw SystemError("truncate", path: "backing file") }
}
