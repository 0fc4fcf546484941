/// Which copies of a file's blocks a power cut could leave, and where a rewrite goes so that
/// one of them always survives (docs/FORMAT.md §6, shadow slots).
///
/// A block rewritten in place while keeping some of its old bytes (an append into the last
/// block, a small write into a block) is resealed whole: a write torn by a power cut would take
/// the old bytes with it. So when the copy it replaces may be durable, the new copy goes to a
/// shadow slot instead, marked current; the next rewrite after a sync goes back in place and
/// unmarks the slot, which stays behind as the fallback until that copy is durable too.
///
/// Durability is tracked in generations: every sync starts a new one, and a copy written in a
/// generation that a completed sync covered is durable. Anything written before this process
/// knew the file counts as durable.
struct ShadowSlots {
    /// One slot's copy of a block.
    struct Copy {
        let block: Int
        /// This copy's own nonce (bytes 6…17 of its envelope): what a file record names it by.
        let nonce: [UInt8]
        /// The nonce of the copy in place this one was newer than when written (FORMAT.md §6):
        /// while the copy in place still has it, this one is current, on disk for any reader.
        let supersedes: [UInt8]
        /// The generation it was written in (-1: before this process).
        let written: Int
        /// nil while it is the block's current copy; then the generation in which the copy in
        /// place replaced it.
        var replacedIn: Int?

        var isCurrent: Bool { replacedIn == nil }
    }

    enum Destination: Equatable {
        case inPlace
        case slot(Int)
        /// Both slots hold copies a cut may still need.
        case busy
        /// A sync under way covers the copy the rewrite would replace: once it returns, that
        /// copy is acknowledged, so the rewrite must wait for it to be durable.
        case awaitSync
    }

    /// The generation writes happen in now.
    private var generation = 0
    /// Copies written in a generation below this one are durable.
    private var durableBelow = 0
    /// Copies written in a generation below this one are covered by a sync begun (and perhaps
    /// not yet returned).
    private var syncingBelow = 0
    /// nil until read from the backing file; then what each slot holds.
    var slots: [Copy?]?
    /// Blocks written in place since the last sync, and when (only the ends of each write:
    /// the blocks a later small write may rewrite).
    private var recentlyInPlace: [Int: Int] = [:]
    private static let recentLimit = 4096
    /// Both slots have their backing space.
    var reserved = false

    func isDurable(_ generation: Int) -> Bool { generation < durableBelow }
    private func isInFlight(_ generation: Int) -> Bool { generation < syncingBelow && !isDurable(generation) }

    /// The slot holding a copy of block `index`, and the nonce of the copy in place it supersedes.
    func slot(of index: Int) -> (slot: Int, supersedes: [UInt8])? {
        guard let slot = slots?.firstIndex(where: { $0?.block == index }) else { return nil }
        return (slot, slots![slot]!.supersedes)
    }

    /// Where a rewrite of block `index` that keeps some of its stored bytes goes (a hole has
    /// none: it goes in place). The slots must be loaded. `tearIsAnError`: a reader would take
    /// a torn copy in place for damage (the block lies below what the file record committed,
    /// FORMAT.md §6 reader step 5), so even a copy no sync acknowledged is kept whole, in a
    /// free slot, while it is rewritten.
    func destination(forRewriteOf index: Int, tearIsAnError: Bool = false) -> Destination {
        if let slot = slot(of: index)?.slot, let copy = slots![slot] {
            if let replacedIn = copy.replacedIn {
                // In place is current: once durable, the slot may take the next copy; until
                // then the slot's copy is the one a cut may need.
                if isInFlight(replacedIn) { return .awaitSync }
                return isDurable(replacedIn) ? .slot(slot) : .inPlace
            }
            // The slot is current: once durable, the next copy goes in place; until then it is
            // rewritten, and the copy in place is the one a cut may need.
            if isInFlight(copy.written) { return .awaitSync }
            return isDurable(copy.written) ? .inPlace : .slot(slot)
        }
        if let written = recentlyInPlace[index], !isDurable(written) {
            if isInFlight(written) { return .awaitSync }
            // Nothing durable to lose; but a tear of it in place would read as damage.
            guard tearIsAnError, let free = slots!.firstIndex(where: isFree) else { return .inPlace }
            return .slot(free)
        }
        return slots!.firstIndex { isFree($0) }.map(Destination.slot) ?? .busy
    }

    /// No slot is free for a new block's copy.
    var isFull: Bool { slots.map { !$0.contains(where: isFree) } ?? false }

    /// Free: empty, or holding a copy that a durable copy in place replaced.
    private func isFree(_ copy: Copy?) -> Bool {
        guard let copy else { return true }
        return copy.replacedIn.map(isDurable) ?? false
    }

    /// Full blocks (below `fullBlocks`) whose current copy a slot holds durably: copied in
    /// place, their slots become free once that copy is durable. A partial last block stays:
    /// its next rewrite goes in place anyway.
    func evictable(fullBlocks: Int) -> [Int] {
        (slots ?? []).indices.filter { slot in
            slots![slot].map { $0.isCurrent && isDurable($0.written) && $0.block < fullBlocks } ?? false
        }
    }

    mutating func wroteSlot(_ slot: Int, block: Int, nonce: [UInt8], supersedes: [UInt8]) {
        slots?[slot] = Copy(block: block, nonce: nonce, supersedes: supersedes, written: generation, replacedIn: nil)
    }


    /// Blocks written in place (each with a new nonce, which ends any slot copy's claim to be
    /// current): the slots that held their current copies, now their fallbacks.
    @discardableResult
    mutating func wroteInPlace(_ blocks: ClosedRange<Int>) -> [Int] {
        // Bounded for a writer that never syncs: a block forgotten counts as durable, which
        // costs a slot, never safety.
        if recentlyInPlace.count >= Self.recentLimit { recentlyInPlace = [:] }
        recentlyInPlace[blocks.lowerBound] = generation
        recentlyInPlace[blocks.upperBound] = generation
        var replaced: [Int] = []
        for slot in (slots ?? []).indices {
            guard let copy = slots![slot], copy.isCurrent, blocks.contains(copy.block) else { continue }
            slots![slot]!.replacedIn = generation
            replaced.append(slot)
        }
        return replaced
    }

    mutating func emptied(_ slot: Int) { slots?[slot] = nil }

    /// A sync begins: writes from now on are in the next generation.
    mutating func beginSync() -> Int {
        defer { generation += 1 }
        syncingBelow = max(syncingBelow, generation + 1)
        return generation
    }

    /// The sync begun at `mark` returned: everything written before it is durable.
    mutating func endSync(_ mark: Int) {
        durableBelow = max(durableBelow, mark + 1)
        recentlyInPlace = recentlyInPlace.filter { !isDurable($0.value) }
    }

    /// Nothing is known about the file: every copy on disk counts as durable.
    mutating func forget() {
        slots = nil
        recentlyInPlace = [:]
        reserved = false
    }
}
