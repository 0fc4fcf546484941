import CLinux
import EpochCrypto
import EpochFormat
import EpochIO
import Glibc

/// The shadow slots of one file on disk (docs/FORMAT.md §6); `ShadowSlots` holds their rules.
extension FileContent {
    /// The slot that holds block `index`'s current copy, given the first bytes of its copy in
    /// place: the one that supersedes the copy in place still there (FORMAT.md §6).
    func currentSlot(of index: Int, inPlace: some Collection<UInt8>) -> Int? {
        guard let (slot, supersedes) = cache.withLock({ $0.shadow.slot(of: index) }), inPlace.count >= Envelope.headerSize,
              inPlace.dropFirst(ContentLayout.nonceRange.lowerBound).prefix(ContentLayout.nonceRange.count).elementsEqual(supersedes) else {
            return nil
        }
        return slot
    }

    /// Writes block `index`'s envelope in place, or into a shadow slot when `keepsStoredBytes`
    /// (the rewrite keeps some of the old bytes of a stored block, not a hole: a hole has no
    /// nonce for a slot to supersede) and the copy it replaces may be durable.
    func store(_ sealed: UnsafeRawBufferPointer, block index: Int, fd: FileDescriptor, keepsStoredBytes: Bool, makeRoom: Bool = false) throws {
        if keepsStoredBytes, let slot = try slotForRewrite(of: index, fd: fd, makeRoom: makeRoom) {
            try writeSlot(slot, sealed, block: index, fd: fd)
        } else {
            try io.pwriteFully(fd, sealed, at: layout.backingOffset(block: index))
            noteWrittenInPlace(index...index)
        }
    }

    /// The slot a rewrite of block `index` (keeping stored bytes) goes to; nil for in place,
    /// also when both slots still hold copies a cut may need (more than two such rewrites
    /// between two syncs: the others are rewritten in place, FORMAT.md §6), unless `makeRoom`:
    /// then the copies in the slots are made durable and the full ones copied in place first
    /// (two fdatasyncs, for the rare operations that can afford them).
    func slotForRewrite(of index: Int, fd: FileDescriptor, makeRoom: Bool = false) throws -> Int? {
        guard layout.slotCount > 0 else { return nil }
        try loadSlots(fd)
        let tearIsAnError = index * layout.blockSize < cache.withLock { $0.commits.record?.committedSize ?? 0 }
        var destination = cache.withLock { $0.shadow.destination(forRewriteOf: index, tearIsAnError: tearIsAnError) }
        if destination == .awaitSync || (destination == .busy && makeRoom) {
            // Another thread's sync covers the copy this rewrite replaces, or the slots are
            // taken: a sync of our own makes the copies durable, after which the rules say
            // where the rewrite goes.
            try syncMarking(fd, dataOnly: true)
            if destination == .busy { try freeSlots(fd) }
            destination = cache.withLock { $0.shadow.destination(forRewriteOf: index, tearIsAnError: tearIsAnError) }
        }
        guard case let .slot(slot) = destination, try reserveSlots(fd) else { return nil }
        return slot
    }

    /// Gives both slots their backing space the first time one is used. Where that fails for
    /// lack of space, rewrites go in place, as in format 1, rather than fail (FORMAT.md §6).
    func reserveSlots(_ fd: FileDescriptor) throws -> Bool {
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
    func writeSlot(_ slot: Int, _ sealed: UnsafeRawBufferPointer, block index: Int, fd: FileDescriptor) throws {
        let supersedes = try io.preadFully(fd, count: ContentLayout.nonceRange.count,
                                           at: layout.backingOffset(block: index) + ContentLayout.nonceRange.lowerBound)
        var bytes = layout.slotHeader(block: index, length: sealed.count, supersedes: supersedes)
        bytes.append(contentsOf: sealed)
        try io.pwriteFully(fd, bytes, at: layout.slotOffset(slot))
        let nonce = Array(UnsafeRawBufferPointer(rebasing: sealed[ContentLayout.nonceRange]))
        cache.withLock { $0.shadow.wroteSlot(slot, block: index, nonce: nonce, supersedes: supersedes) }
    }

    /// Blocks just written in place: a slot that held one's current copy is its fallback now
    /// (the new copy's nonce is not the one the slot supersedes).
    func noteWrittenInPlace(_ blocks: ClosedRange<Int>) {
        cache.withLock { _ = $0.shadow.wroteInPlace(blocks) }
    }

    /// Reads the slot headers (and each copy's nonce), once while the file id stays. What they
    /// hold counts as durable, so it is made so first (a daemon killed before its sync leaves it
    /// in the page cache).
    func loadSlots(_ fd: FileDescriptor) throws {
        guard layout.slotCount > 0, cache.withLock({ $0.shadow.slots == nil }) else { return }
        var slots: [ShadowSlots.Copy?] = []
        for slot in 0..<layout.slotCount {
            let bytes = try io.preadFully(fd, count: ContentLayout.slotHeaderSize + Envelope.headerSize, at: layout.slotOffset(slot))
            guard bytes.count == ContentLayout.slotHeaderSize + Envelope.headerSize,
                  let (block, _, supersedes) = layout.slotHeader(Array(bytes[..<ContentLayout.slotHeaderSize])) else {
                slots.append(nil)
                continue
            }
            let nonce = Array(bytes[ContentLayout.slotHeaderSize...].dropFirst(ContentLayout.nonceRange.lowerBound))
            let inPlace = try io.preadFully(fd, count: ContentLayout.nonceRange.count,
                                            at: layout.backingOffset(block: block) + ContentLayout.nonceRange.lowerBound)
            slots.append(ShadowSlots.Copy(block: block, nonce: nonce, supersedes: supersedes, written: -1,
                                          replacedIn: inPlace == supersedes ? nil : -1))
        }
        if slots.contains(where: { $0 != nil }) { try syncMarking(fd, dataOnly: true) }
        cache.withLock { cache in
            if cache.shadow.slots == nil { cache.shadow.slots = slots }
        }
    }

    /// Copies the full blocks whose current copy a slot holds durably in place (the slots are
    /// free once those copies are durable too).
    func evictFullBlocks(_ fd: FileDescriptor) throws {
        let size = layout.plaintextSize(backingSize: try io.size(fd))
        for slot in cache.withLock({ $0.shadow.evictable(fullBlocks: size / layout.blockSize) }) {
            guard let copy = try readSlot(slot, fd: fd), copy.sealed.count == layout.sealedBlockSize else { continue }
            try io.pwriteFully(fd, copy.sealed, at: layout.backingOffset(block: copy.block))
            noteWrittenInPlace(copy.block...copy.block)
        }
    }

    /// Empties the slots that hold copies of blocks from `block` on, once the truncate that
    /// removed those blocks is durable.
    func dropSlots(from block: Int, fd: FileDescriptor) throws {
        try loadSlots(fd)
        let doomed = cache.withLock { cache in
            (cache.shadow.slots ?? []).indices.filter { cache.shadow.slots![$0].map { $0.block >= block } ?? false }
        }
        if !doomed.isEmpty { try syncMarking(fd, dataOnly: true) }
        for slot in doomed {
            try io.pwriteFully(fd, [UInt8](repeating: 0, count: ContentLayout.slotHeaderSize), at: layout.slotOffset(slot))
            cache.withLock { $0.shadow.emptied(slot) }
        }
    }

    /// The block index and envelope a slot holds; nil for an empty or malformed slot, and for
    /// the copy the file record found older than its block's copy in place, which is never
    /// the block again, whatever becomes of the copy in place (docs/FORMAT.md §6.2).
    func readSlot(_ slot: Int, fd: FileDescriptor) throws -> (block: Int, sealed: [UInt8])? {
        let header = try io.preadFully(fd, count: ContentLayout.slotHeaderSize, at: layout.slotOffset(slot))
        guard let (block, length, _) = layout.slotHeader(header) else { return nil }
        let sealed = try io.preadFully(fd, count: length, at: layout.slotOffset(slot) + ContentLayout.slotHeaderSize)
        guard sealed.count == length,
              !cache.withLock({ $0.commits.isOlderCopy(in: slot, of: block, nonce: sealed[ContentLayout.nonceRange]) }) else { return nil }
        return (block, sealed)
    }

    /// Right after a sync, when no slot is left free: copies the full blocks current in slots
    /// in place and makes them durable. The write lock must be held.
    func freeSlots(_ fd: FileDescriptor) throws {
        guard cache.withLock({ $0.shadow.isFull }) else { return }
        try evictFullBlocks(fd)
        try syncMarking(fd, dataOnly: true)
    }

    func syncMarking(_ fd: FileDescriptor, dataOnly: Bool) throws {
        let mark = cache.withLock { $0.shadow.beginSync() }
        try dataOnly ? io.fdatasync(fd) : io.fsync(fd)
        cache.withLock { $0.shadow.endSync(mark) }
    }
}
