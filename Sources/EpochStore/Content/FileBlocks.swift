import CLinux
import EpochCrypto
import EpochFormat
import EpochIO
import Glibc

/// Opening and sealing one file's blocks, and the file id they are keyed by.
extension FileContent {
    /// The file id, creating the header (format 3: the record) of an empty backing file.
    func prepareForWrite(_ fd: FileDescriptor, backingSize: Int) throws -> FileID {
        if backingSize >= layout.dataOffset { return try loadFileID(fd) }
        try requireCommittedSize(0) // cut below its record by someone else
        // Empty (or a header torn at creation, which held no data): start a new file id.
        let fileID = try FileID.random()
        if !layout.hasRecord { try io.pwriteFully(fd, layout.header(fileID: fileID), at: layout.headerOffset) }
        cache.withLock {
            $0.adopt(fileID)
            $0.shadow.slots = Array(repeating: nil, count: layout.slotCount) // a new file's slots are empty
            $0.commits.scanned = true // and it has no blocks
        }
        if layout.hasRecord { try writeRecord(FileRecord(fileID: fileID), fd: fd) }
        return fileID
    }

    /// The file id and record sequence a directory record checks this file by (docs/FORMAT.md
    /// §5.6), nil while it has no record.
    func recordIdentity(fd: FileDescriptor) throws -> (fileID: FileID, sequence: UInt64)? {
        try access.withReadLock {
            guard layout.hasRecord, try io.size(fd) >= layout.dataOffset else { return nil }
            let fileID = try loadFileID(fd)
            return (fileID, cache.withLock { $0.commits.record?.sequence } ?? 0)
        }
    }

    /// What a directory's commit may bind this file by, from its record as this process knows
    /// it (`known` false: not read yet): record s is written only after a sync returned, and that
    /// sync made record s − 1 durable; so with s ≥ 2 the file id and sequence s − 1 are durable.
    var durableRecordBound: (fileID: FileID, sequence: UInt64)? {
        cache.withLock { cache in
            guard let id = cache.fileID, let sequence = cache.commits.record?.sequence, sequence >= 2 else { return nil }
            return (id, sequence - 1)
        }
    }

    func loadFileID(_ fd: FileDescriptor) throws -> FileID {
        if let known = cache.withLock({ $0.fileID }) { return known }
        return try readFileID(fd)
    }

    /// The file id in the backing file's header, adopted (a new one ends what was known of the old).
    func readFileID(_ fd: FileDescriptor) throws -> FileID {
        if layout.hasRecord { return try readRecord(fd) }
        let header = try io.preadFully(fd, count: ContentLayout.headerSize, at: layout.headerOffset)
        guard header.count == ContentLayout.headerSize else { throw SystemError("read", path: "file header", errno: EIO) }
        let version = UInt16(header[0]) << 8 | UInt16(header[1])
        guard version == layout.version else { throw ContentError.badFileHeader(version: version) }
        let fileID = try FileID(header[2...])
        cache.withLock { $0.adopt(fileID) }
        return fileID
    }

    /// Re-seals block `index` with its plaintext cut or zero-extended to `newLength`, as a
    /// rewrite keeping stored bytes (through a shadow slot while the old copy may be durable;
    /// with `makeRoom`, never in place for want of a free slot). A hole is left as it is.
    func rewriteBlock(_ index: Int, fileID: FileID, fd: FileDescriptor, currentSize: Int, newLength: Int, epoch: Epoch,
                      makeRoom: Bool = false) throws {
        let existing = max(0, min(layout.blockSize, currentSize - index * layout.blockSize))
        var (plain, wasHole) = try readBlock(index, fileID: fileID, fd: fd, length: existing)
        // A hole cut or grown is a hole of the new length: the ftruncate makes it, no write.
        guard !wasHole else { return }
        if plain.count > newLength { plain.removeLast(plain.count - newLength) }
        if plain.count < newLength { plain += [UInt8](repeating: 0, count: newLength - plain.count) }
        try writeBlock(index, plain, fileID: fileID, fd: fd, epoch: epoch, keepsStoredBytes: true, makeRoom: makeRoom)
    }

    /// Seals `plain` as block `index` under `epoch` and stores it (`store`).
    func writeBlock(_ index: Int, _ plain: [UInt8], fileID: FileID, fd: FileDescriptor, epoch: Epoch, keepsStoredBytes: Bool,
                    makeRoom: Bool = false) throws {
        var sealed = [UInt8](repeating: 0, count: plain.count + Envelope.overhead)
        var key = try blockKey(epoch, fileID: fileID)
        try plain.withUnsafeBytes { p in
            try sealed.withUnsafeMutableBytes { try sealBlock(p, block: index, key: &key, into: $0) }
        }
        try sealed.withUnsafeBytes { try store($0, block: index, fd: fd, keepsStoredBytes: keepsStoredBytes, makeRoom: makeRoom) }
    }

    /// The `length` plaintext bytes of block `index` (zeros past the end of the backing file),
    /// and whether it is a hole (or past the end).
    func readBlock(_ index: Int, fileID: FileID, fd: FileDescriptor, length: Int) throws -> (plain: [UInt8], wasHole: Bool) {
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
    struct BlockKey {
        let key: AESGCMKey
        var aad: StorageAAD
    }

    func blockKey(_ keyID: Epoch, fileID: FileID) throws -> BlockKey {
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
    func openBlock(_ index: Int, fileID: FileID, fd: FileDescriptor, sealed: UnsafeRawBufferPointer,
                           into output: UnsafeMutableRawBufferPointer, key: inout BlockKey?) throws -> Bool {
        // Format 3: the last commit found this block's current copy durable in a slot. While
        // the copy in place is the one it superseded, that slot copy is the block, or nothing is.
        let claimed = cache.withLock { $0.commits.claimedCopy(of: index, inPlace: sealed) }
        if case let .slot(slot, copyNonce)? = claimed {
            guard try openSlotCopy(slot, index, fileID: fileID, fd: fd, into: output, key: &key, nonce: copyNonce) else {
                throw failIntegrity(.slotCopy(index: index))
            }
            volume.counters.blocksRead.add(1, ordering: .relaxed)
            return false
        }
        if let current = currentSlot(of: index, inPlace: sealed), try openSlotCopy(current, index, fileID: fileID, fd: fd, into: output, key: &key) {
            volume.counters.blocksRead.add(1, ordering: .relaxed)
            return false
        }
        if sealed.allSatisfy({ $0 == 0 }) {
            // Format 3: a block the last commit found holding data is never a hole.
            if index < cache.withLock({ $0.commits.record?.denseBlocks ?? 0 }) { throw failIntegrity(.zeroedBlock(index: index)) }
            output.initializeMemory(as: UInt8.self, repeating: 0)
            return true
        }
        do {
            try openEnvelope(sealed, block: index, fileID: fileID, into: output, key: &key)
        } catch let error as EnvelopeError {
            // The record found this very copy current: no older one in a slot stands in for it.
            guard try openShorterCopy(index, fileID: fileID, sealed: sealed, into: output, key: &key)
                    || claimed != .inPlace && cache.withLock({ $0.shadow.slot(of: index) }).map({
                        try openSlotCopy($0.slot, index, fileID: fileID, fd: fd, into: output, key: &key)
                    }) ?? false
            else {
                // A retired key is never a tear: a copy from before the retire put back fails closed.
                let retired = if case .retiredKey = error { true } else { false }
                if claimed == nil, !retired, isTornWrite(index, sealed: sealed) {
                    output.initializeMemory(as: UInt8.self, repeating: 0)
                    return true
                }
                volume.counters.authenticationFailures.add(1, ordering: .relaxed)
                throw ContentError.block(index: index, error)
            }
        }
        volume.counters.blocksRead.add(1, ordering: .relaxed)
        return false
    }

    /// Whether a copy in place that does not open is what a write torn by a power cut or a
    /// killed daemon may leave where the block held nothing acknowledged: then the block is the
    /// hole it was (docs/FORMAT.md §6, reader step 5). The last commit did not find data in it
    /// (it is at or past `dense_blocks`, format 3), and either no sync acknowledged any byte of
    /// it (it lies past `committed_size`), or the copy stops at a 512-byte boundary of the
    /// backing file: the file ends there (a torn append: only the last block is short), or each
    /// byte from there to its end is zero (a torn write into a hole). Any other damage is an error.
    func isTornWrite(_ index: Int, sealed: UnsafeRawBufferPointer) -> Bool {
        guard let record = cache.withLock({ $0.commits.record }), index >= record.denseBlocks,
              let lastNonZero = sealed.lastIndex(where: { $0 != 0 }) else { return false }
        if index * layout.blockSize >= record.committedSize { return true }
        let start = layout.backingOffset(block: index), end = start + sealed.count
        let sector = ContentLayout.sectorSize
        if sealed.count < layout.sealedBlockSize && end % sector == 0 { return true }
        let zerosFrom = start + lastNonZero + 1
        return (zerosFrom + sector - 1) / sector * sector < end
    }

    func openEnvelope(_ sealed: UnsafeRawBufferPointer, block index: Int, fileID: FileID, into output: UnsafeMutableRawBufferPointer,
                              key: inout BlockKey?) throws {
        let keyID = try Envelope.keyID(of: sealed)
        if key?.aad.keyID != keyID { key = try blockKey(keyID, fileID: fileID) }
        let aead = key!.key
        try key!.aad.withBlock(UInt64(index)) { try Envelope.open(sealed, keyID: keyID, key: aead, aad: $0, into: output) }
    }

    /// Opens the copy of block `index` in `slot` (the one of nonce `nonce`, when given) into `output`: cut to its length, or
    /// zero-padded to it where the size grew past the copy (a cut that kept the growth of the
    /// file by an append no sync acknowledged, but not the append). False if it does not open.
    func openSlotCopy(_ slot: Int, _ index: Int, fileID: FileID, fd: FileDescriptor, into output: UnsafeMutableRawBufferPointer,
                      key: inout BlockKey?, nonce: [UInt8]? = nil) throws -> Bool {
        guard let copy = try readSlot(slot, fd: fd), copy.block == index,
              nonce.map({ copy.sealed[ContentLayout.nonceRange].elementsEqual($0) }) ?? true else { return false }
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
    func openShorterCopy(_ index: Int, fileID: FileID, sealed: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer,
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

    func sealBlock(_ plain: UnsafeRawBufferPointer, block: Int, key: inout BlockKey, into output: UnsafeMutableRawBufferPointer) throws {
        let aead = key.key, keyID = key.aad.keyID
        try key.aad.withBlock(UInt64(block)) { try Envelope.seal(plaintext: plain, keyID: keyID, key: aead, aad: $0, into: output) }
        volume.counters.blocksWritten.add(1, ordering: .relaxed)
    }

    func fileKey(epoch: Epoch, fileID: FileID) throws -> AESGCMKey {
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
