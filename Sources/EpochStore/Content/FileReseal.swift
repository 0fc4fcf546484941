import CLinux
import EpochCrypto
import EpochFormat
import EpochIO
import EpochSystem
import Glibc

/// Re-encryption of one file's blocks, in place or by copy-on-write (docs/FORMAT.md §6.1), and
/// the walk over them that scans and fsck make.
extension FileContent {
    /// Visits every block of the file open at `fd`, in order: the key id its current copy (in
    /// place, or in a shadow slot) names and whether it opens, exactly as a read through the
    /// mount would (without `opening`, only the key id: the block is not read). Throws what
    /// stops the whole file from being read (a bad file header, an I/O error).
    public func visitStoredBlocks(fd: FileDescriptor, opening: Bool = true, _ visit: (StoredBlock) throws -> Void) throws {
        let size = try self.size(fd: fd)
        let blockSize = layout.blockSize
        try access.withReadLock { try loadSlots(fd) }
        for index in 0..<((size + blockSize - 1) / blockSize) {
            let length = min(blockSize, size - index * blockSize)
            let keyID = try storedKeyID(of: index, fd: fd)
            var error: EnvelopeError?
            do {
                if opening { _ = try read(fd: fd, offset: index * blockSize, count: length) { $0.count } }
            } catch let ContentError.block(_, envelopeError) {
                error = envelopeError
            }
            try visit(StoredBlock(index: index, keyID: keyID, length: length, error: error))
        }
    }

    /// The epochs the current copies of `blocks` name (`storedKeyID`), up to the end of the file.
    package func storedKeyIDs(fd: FileDescriptor, in blocks: Range<Int>) throws -> [Epoch?] {
        try access.withReadLock {
            try loadSlots(fd)
            let count = (try size(fd: fd) + layout.blockSize - 1) / layout.blockSize
            return try blocks.clamped(to: 0..<count).map { try storedKeyID(of: $0, fd: fd) }
        }
    }

    /// The epoch block `index`'s current copy (in a shadow slot, or in place) names; nil for a
    /// hole (all zeros) or a copy too damaged to name one. The slots must be loaded.
    func storedKeyID(of index: Int, fd: FileDescriptor) throws -> Epoch? {
        let inPlace = try io.preadFully(fd, count: Envelope.overhead, at: layout.backingOffset(block: index))
        let current = try currentSlot(of: index, inPlace: inPlace).flatMap { try readSlot($0, fd: fd)?.sealed }
        // The envelope's first bytes name the epoch; a hole's are zeros, which name none.
        return try? (current ?? inPlace).withUnsafeBytes { try Envelope.keyID(of: $0) }
    }

    /// Reseals under the active epoch, with the same plaintext, every block of `blocks` whose
    /// current copy names an older epoch (re-encryption). Each is stored as a rewrite keeping
    /// all of its bytes: into a shadow slot while the copy it replaces may be durable, and the
    /// file is synced (freeing the slots) before a third such copy would need one, so that a
    /// power cut at any moment leaves every block readable (docs/FORMAT.md §6). The blocks end
    /// durable. A block that does not open is left as it is and counted.
    public func resealOlderBlocks(fd: FileDescriptor, in blocks: Range<Int>) throws -> ResealCount {
        try volume.sealing { epoch in try exclusively {
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
                try writeBlock(index, plain, fileID: fileID, fd: fd, epoch: epoch, keepsStoredBytes: true, makeRoom: true)
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
    func resealedCopy(fd: FileDescriptor, into copy: FileDescriptor) throws -> ResealCount? {
        try volume.sealing { epoch in try exclusively {
            let size = try self.size(fd: fd)
            guard size > 0 else { return nil }
            let fileID = try loadFileID(fd)
            try requireCommittedSize(size)
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
            if !layout.hasRecord { try io.pwriteFully(copy, layout.header(fileID: fileID), at: layout.headerOffset) }
            // The copy's record keeps what the file's promised, and adds what it holds itself.
            var storedPrefix = cache.withLock { $0.commits.record?.denseBlocks ?? 0 }
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
                        if block == storedPrefix { storedPrefix += 1 }
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
                            } catch let error as ContentError {
                                // A block that does not open is left as it is, as the in-place reseal
                                // does; one that breaks a promise of the record stops the copy, which
                                // would otherwise drop the record that tells.
                                guard case .block = error else { throw error }
                                output.copyMemory(from: stored)
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
            if layout.hasRecord {
                let blocks = (size + layout.blockSize - 1) / layout.blockSize
                // A sequence past the old one: a directory record may bind the file by it (§5.6).
                // The attributes are copied as stored: the old binding holds for them.
                let old = cache.withLock { $0.commits.record }
                let record = FileRecord(fileID: fileID, sequence: (old?.sequence ?? 0) + 1, committedSize: size,
                                        denseBlocks: min(storedPrefix, blocks), attributes: old?.attributes ?? .unbound)
                try io.pwriteFully(copy, try record.encoded(key: volume.keys.recordKey), at: layout.headerOffset)
            }
            try io.ftruncate(copy, size: layout.backingSize(plaintextSize: size)) // a trailing hole keeps its size
            return count
        } }
    }

    /// The envelope in place of `block`, one of `blocks`, whose sealed bytes `sealed` holds back to back.
    func envelope(of block: Int, in blocks: Range<Int>, _ sealed: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        let at = (block - blocks.lowerBound) * layout.sealedBlockSize
        return UnsafeRawBufferPointer(rebasing: sealed[at..<min(at + layout.sealedBlockSize, sealed.count)])
    }

    /// `storedKeyID` for a block whose envelope in place was read already into `stored`.
    func keyID(of block: Int, stored: UnsafeRawBufferPointer, fd: FileDescriptor) throws -> Epoch? {
        if let slot = currentSlot(of: block, inPlace: stored) { return try readSlot(slot, fd: fd)?.sealed.withUnsafeBytes { try? Envelope.keyID(of: $0) } }
        return try? Envelope.keyID(of: stored)
    }

    /// Reads the stored blocks of a file of plaintext `size`, `copyChunk` bytes at a time, into
    /// a buffer of its own and hands each run of blocks and their sealed bytes to `body`, until
    /// it returns false. The access lock must be held.
    func forEachChunk(_ fd: FileDescriptor, size: Int, _ body: (Range<Int>, UnsafeRawBufferPointer) throws -> Bool) throws {
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
}
