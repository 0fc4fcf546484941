import CLinux
import EpochFormat
import EpochIO
import Glibc

/// What a format-3 file's commits track between them (docs/FORMAT.md §6.2).
struct CommitState {
    /// The record as last read or committed; nil until known, and always for formats 1 and 2.
    var record: FileRecord?
    /// Blocks [0, storedBlocks) are known to hold data (none is a hole): from the record, a
    /// look at the file, and writes since. The next commit's dense count, once a sync covers them.
    var storedBlocks = 0
    /// The blocks past `storedBlocks` were looked at since the file id became known.
    var scanned = false
    /// Commits that took back what an earlier one promised (a truncate down, a hole punched):
    /// a commit prepared before one of them is not written.
    var shrinks = 0

    /// A record read from the backing file. One older than a record this process committed is
    /// not taken: the caller treats it as put back.
    mutating func adopt(_ found: FileRecord) {
        guard (record?.sequence ?? 0) < found.sequence else { return }
        record = found
        storedBlocks = max(storedBlocks, found.denseBlocks)
    }

    /// Blocks just written (sealed, so none of them is a hole).
    mutating func noteStored(_ blocks: ClosedRange<Int>) {
        if blocks.lowerBound <= storedBlocks { storedBlocks = max(storedBlocks, blocks.upperBound + 1) }
    }

    /// Where the record says block `index`'s current copy is, given the copy in place (its nonce
    /// is bytes 6…17): nil when the record says nothing of the block or that copy was written
    /// after the commit.
    func claimedCopy(of index: Int, inPlace: UnsafeRawBufferPointer) -> ClaimedCopy? {
        guard let slots = record?.slots, inPlace.count >= Envelope.headerSize else { return nil }
        let nonce = UnsafeRawBufferPointer(rebasing: inPlace[ContentLayout.nonceRange])
        for (slot, claim) in slots.enumerated() {
            switch claim {
            case let .inSlot(block, copyNonce, supersedes)? where block == index && nonce.elementsEqual(supersedes):
                return .slot(slot, copyNonce: copyNonce)
            case let .inPlace(block, claimed, _)? where block == index && nonce.elementsEqual(claimed):
                return .inPlace
            default:
                continue
            }
        }
        return nil
    }

    /// Whether the copy of block `index` of nonce `nonce` in `slot` is the older copy the record
    /// found there: never the block, whatever the copy in place has become since.
    func isOlderCopy(in slot: Int, of index: Int, nonce: some Collection<UInt8>) -> Bool {
        guard let slots = record?.slots, slot < slots.count, case let .inPlace(block, _, olderCopy)? = slots[slot] else { return false }
        return block == index && olderCopy.contains(where: { $0 != 0 }) && nonce.elementsEqual(olderCopy)
    }
}

/// Where a file record puts a block's current copy (`CommitState.claimedCopy`).
enum ClaimedCopy: Equatable {
    case slot(Int, copyNonce: [UInt8])
    case inPlace
}

/// A commit prepared before a sync, written after it returned.
struct PreparedCommit {
    let record: FileRecord
    let shrinks: Int
}

/// The file record (docs/FORMAT.md §6.2): what each fsync or fdatasync made durable, committed
/// after it returns, and checked by every read.
extension FileContent {
    /// fsync(2) or fdatasync(2) of the backing file, noting what it made durable, then (format
    /// 3) the commit of the file record that says so. The record is written after the sync
    /// returned, so it never names what a power cut could still take; the file's next sync (or
    /// the unmount's) makes it durable. When no slot is left free for the next rewrite, the full
    /// blocks current in slots are copied in place and made durable by a second fdatasync, so
    /// that the next sync interval has a slot.
    public func sync(fd: FileDescriptor, dataOnly: Bool) throws {
        // Changes from here on are the next commit's; this one's are noted again if it fails.
        let changed = takeChanged()
        var committed = false
        defer { if changed && !committed { noteChanged() } }
        // What the commit will claim is taken with no write under way, in the same step as the
        // sync's mark, so that the sync covers every copy it names.
        let (mark, prepared) = try access.withReadLock {
            let prepared = try prepareCommit(fd, attributesDurable: !dataOnly)
            return (cache.withLock { $0.shadow.beginSync() }, prepared)
        }
        try dataOnly ? io.fdatasync(fd) : io.fsync(fd)
        cache.withLock { $0.shadow.endSync(mark) }
        let needsFreeSlot = cache.withLock { $0.shadow.isFull }
        // Nearly always there is no commit and a slot is free: then no reader waits on the lock.
        guard prepared != nil || needsFreeSlot else {
            committed = true
            return
        }
        try exclusively {
            do {
                if let prepared { try commit(prepared, fd: fd) }
                try freeSlots(fd)
                committed = true
            } catch let error as SystemError where error.errno == EBADF {
                return // synced through a read-only handle: the next write's sync does it
            }
        }
    }

    /// The record that the sync about to begin will make true; nil when it would say nothing new.
    /// Where that sync makes the attributes durable too (an fsync), the set read now is the one
    /// it binds. The access lock must be held (shared is enough).
    func prepareCommit(_ fd: FileDescriptor, attributesDurable: Bool) throws -> PreparedCommit? {
        guard layout.hasRecord else { return nil }
        let backingSize = try io.size(fd)
        guard backingSize >= layout.dataOffset else { return nil }
        let fileID = try loadFileID(fd)
        let size = layout.plaintextSize(backingSize: backingSize)
        try requireCommittedSize(size)
        let blocks = (size + layout.blockSize - 1) / layout.blockSize
        if !cache.withLock({ $0.commits.scanned }) {
            try loadSlots(fd)
            let (stored, complete) = try storedPrefix(fd, fileID: fileID, from: cache.withLock { $0.commits.storedBlocks }, below: blocks, size: size)
            cache.withLock {
                $0.commits.storedBlocks = max($0.commits.storedBlocks, stored)
                $0.commits.scanned = complete
            }
        }
        // Every copy now in a slot, and in place, was written before the sync begins: it covers them.
        let copies = cache.withLock { $0.shadow.slots } ?? Array(repeating: nil, count: FileRecord.slotCount)
        let claims = try copies.map { copy -> FileRecord.SlotClaim? in
            guard let copy, copy.block < blocks else { return nil }
            if copy.isCurrent { return .inSlot(block: copy.block, copyNonce: copy.nonce, supersedes: copy.supersedes) }
            let inPlace = try io.preadFully(fd, count: ContentLayout.nonceRange.count,
                                            at: layout.backingOffset(block: copy.block) + ContentLayout.nonceRange.lowerBound)
            // A hole in place has no nonce; the record's dense count speaks for it. A slot copy
            // copied in place (the same envelope) is no older one.
            guard inPlace.contains(where: { $0 != 0 }) else { return nil }
            return .inPlace(block: copy.block, nonce: inPlace,
                            olderCopy: copy.nonce == inPlace ? [UInt8](repeating: 0, count: inPlace.count) : copy.nonce)
        }
        let attributes = attributesDurable && bindsAttributes ? try StoredAttributes(of: fd, io: io).digest : nil
        return cache.withLock { cache in
            guard let record = cache.commits.record else { return nil }
            var next = FileRecord(fileID: record.fileID, sequence: record.sequence, committedSize: size,
                                  denseBlocks: min(cache.commits.storedBlocks, blocks), slots: claims,
                                  attributes: attributes.map { record.attributes.committing($0) } ?? record.attributes)
            guard next != record else { return nil }
            next.sequence += 1
            return PreparedCommit(record: next, shrinks: cache.commits.shrinks)
        }
    }

    /// Writes a prepared record, unless the file changed under it: a commit that shrank what
    /// records promise, another commit, or a new file id. The write lock must be held.
    func commit(_ prepared: PreparedCommit, fd: FileDescriptor) throws {
        let current = cache.withLock { cache in
            cache.commits.shrinks == prepared.shrinks && cache.commits.record?.fileID == prepared.record.fileID
                && cache.commits.record?.sequence == prepared.record.sequence - 1
        }
        if current { try writeRecordKeepingTimes(prepared.record, fd: fd) }
    }

    /// `writeRecord` where nothing of the content changes (a commit, an attribute binding): the
    /// mount shows the backing file's times, and a record is no change of the file's content.
    /// The write lock must be held, so that no write's time is undone.
    func writeRecordKeepingTimes(_ record: FileRecord, fd: FileDescriptor) throws {
        let times = try io.fstat(fd)
        try writeRecord(record, fd: fd)
        try io.utimensat(fd, access: times.st_atim, modification: times.st_mtim)
    }

    /// Before a truncate to `newSize` or holes made from block `holesFrom` on: a record that no
    /// longer promises what is about to go, made durable first (one fdatasync, also done when
    /// `sync` though the record stays), so that no state a power cut leaves contradicts the
    /// record on disk. The write lock must be held.
    func commitShrink(_ fd: FileDescriptor, toSize newSize: Int? = nil, holesFrom hole: Int? = nil, sync: Bool = false) throws {
        let blocks = newSize.map { ($0 + layout.blockSize - 1) / layout.blockSize } ?? Int.max
        let limit = min(blocks, hole ?? Int.max)
        let record = cache.withLock { cache -> FileRecord? in
            cache.commits.storedBlocks = min(cache.commits.storedBlocks, limit)
            return cache.commits.record
        }
        var next = record
        next?.committedSize = min(record?.committedSize ?? 0, newSize ?? Int.max)
        next?.denseBlocks = min(record?.denseBlocks ?? 0, limit)
        next?.slots = record?.slots.map { $0.flatMap { $0.block < blocks ? $0 : nil } } ?? []
        let changes = next != record
        if changes, var next {
            next.sequence += 1
            try writeRecord(next, fd: fd)
        }
        if changes || sync { try syncMarking(fd, dataOnly: true) }
        // Counted even when the record stays: a commit prepared before this (a sync under way
        // on another handle) names a size or blocks about to go, and must not be written.
        cache.withLock { $0.commits.shrinks += 1 }
    }

    /// The record of a new file (its first block is about to be written), or of a whole copy.
    func writeRecord(_ record: FileRecord, fd: FileDescriptor) throws {
        try io.pwriteFully(fd, try record.encoded(key: volume.keys.recordKey), at: layout.headerOffset)
        cache.withLock { $0.commits.record = record }
    }

    /// Reads and checks the file record, and takes its file id.
    func readRecord(_ fd: FileDescriptor) throws -> FileID {
        let bytes = try io.preadFully(fd, count: FileRecord.size, at: layout.headerOffset)
        guard bytes.count == FileRecord.size else { throw SystemError("read", path: "file record", errno: EIO) }
        let found: FileRecord?
        do {
            found = try FileRecord.decode(bytes, key: volume.keys.recordKey)
        } catch {
            throw failIntegrity(.record(error))
        }
        guard let found else { throw failIntegrity(.missingRecord) }
        let older = cache.withLock { cache -> UInt64? in
            cache.adopt(found.fileID)
            if let known = cache.commits.record, known.sequence > found.sequence { return known.sequence }
            cache.commits.adopt(found)
            return nil
        }
        // This process committed a newer one: an older record was put back underneath.
        if let older { throw failIntegrity(.olderRecord(found: found.sequence, committed: older)) }
        return found.fileID
    }

    /// A backing file holding fewer plaintext bytes than the last commit made durable was cut.
    func requireCommittedSize(_ size: Int) throws {
        guard let committed = cache.withLock({ $0.commits.record?.committedSize }), size < committed else { return }
        throw failIntegrity(.cut(size: size, committed: committed))
    }

    /// For the attributes of the file, whose size comes from the backing file alone: a size
    /// below what the last commit made durable is a cut by someone else, an error as it is for a
    /// read (which takes the size from what it last saw), once no change of this process that
    /// is under way can explain it.
    public func requireCommittedSize(plaintextSize size: Int, of fd: FileDescriptor) throws {
        guard let committed = cache.withLock({ $0.commits.record?.committedSize }), size < committed else { return }
        try access.withReadLock { try requireCommittedSize(try self.size(fd: fd)) }
    }

    /// Counts an integrity failure (reported like an authentication failure) and returns it.
    func failIntegrity(_ error: ContentError) -> ContentError {
        volume.counters.authenticationFailures.add(1, ordering: .relaxed)
        return error
    }

    /// How many leading blocks, from `start` on and below `end`, hold data. Each is opened: one
    /// that does not open is not counted (its reads fail anyway), nor is one a crash tore where
    /// it held nothing (`isTornWrite`). That one is made the hole it reads as (zeros written over
    /// it, made durable by the sync that follows), so that no later commit, covering it with
    /// `committed_size`, turns it into an error. Only blocks this process has not written since
    /// the file id became known are looked at, once: after a crash, the writes no sync acknowledged.
    /// Not `complete` where a torn block could not be mended through a read-only handle: the
    /// next sync looks again.
    private func storedPrefix(_ fd: FileDescriptor, fileID: FileID, from start: Int, below end: Int, size: Int) throws
        -> (blocks: Int, complete: Bool) {
        var block = start
        while block < end {
            let length = min(layout.blockSize, size - block * layout.blockSize)
            let stored = try io.preadFully(fd, count: length + Envelope.overhead, at: layout.backingOffset(block: block))
            guard stored.contains(where: { $0 != 0 }) else { break }
            do {
                guard try readBlock(block, fileID: fileID, fd: fd, length: length).wasHole else {
                    block += 1
                    continue
                }
            } catch is ContentError {
                break
            }
            do {
                try io.pwriteFully(fd, [UInt8](repeating: 0, count: stored.count), at: layout.backingOffset(block: block))
            } catch let error as SystemError where error.errno == EBADF {
                return (block, false)
            }
            break
        }
        return (block, true)
    }
}
