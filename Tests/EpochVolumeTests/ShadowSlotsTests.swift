@testable import EpochStore
@testable import EpochVolume
import Testing

/// Where a rewrite that keeps old bytes of a block goes (docs/FORMAT.md §6, writing with slots).
@Suite struct ShadowSlotsTests {
    /// Both slots read from the file, empty.
    func empty() -> ShadowSlots {
        var shadow = ShadowSlots()
        shadow.slots = [nil, nil]
        return shadow
    }

    func sync(_ shadow: inout ShadowSlots) { shadow.endSync(shadow.beginSync()) }

    @Test func theTwoCopiesTakeTurnsFromSyncToSync() {
        var shadow = empty()
        // A block this process has not written counts as durable: its rewrite goes aside.
        #expect(shadow.destination(forRewriteOf: 3) == .slot(0))
        shadow.wroteSlot(0, block: 3, nonce: [], supersedes: [])
        // Again before a sync: the slot again, the copy in place being the durable one.
        #expect(shadow.destination(forRewriteOf: 3) == .slot(0))
        sync(&shadow)
        // The slot's copy is durable now: the next goes in place, and the slot is unmarked.
        #expect(shadow.destination(forRewriteOf: 3) == .inPlace)
        #expect(shadow.wroteInPlace(3...3) == [0])
        #expect(shadow.slot(of: 3)?.slot == 0)
        // Until that copy is durable, in place again: the slot keeps the durable one.
        #expect(shadow.destination(forRewriteOf: 3) == .inPlace)
        sync(&shadow)
        #expect(shadow.destination(forRewriteOf: 3) == .slot(0))
    }

    @Test func aBlockWrittenSinceTheLastSyncHasNothingToLose() {
        var shadow = empty()
        _ = shadow.wroteInPlace(0...7)
        #expect(shadow.destination(forRewriteOf: 7) == .inPlace)
        #expect(shadow.destination(forRewriteOf: 0) == .inPlace)
        sync(&shadow)
        #expect(shadow.destination(forRewriteOf: 7) == .slot(0))
    }

    /// Below what the file record committed, a torn copy in place reads as damage, not as the
    /// hole it was: a rewrite of a block written since the last sync goes to a free slot, and
    /// stays there until a sync; with no slot free, in place.
    @Test func aBlockWrittenSinceTheLastSyncBelowTheCommittedSizeIsKeptWhole() {
        var shadow = empty()
        _ = shadow.wroteInPlace(0...7)
        #expect(shadow.destination(forRewriteOf: 7, tearIsAnError: true) == .slot(0))
        shadow.wroteSlot(0, block: 7, nonce: [], supersedes: [])
        #expect(shadow.destination(forRewriteOf: 7, tearIsAnError: true) == .slot(0))
        #expect(shadow.destination(forRewriteOf: 0, tearIsAnError: true) == .slot(1))
        shadow.wroteSlot(1, block: 0, nonce: [], supersedes: [])
        _ = shadow.wroteInPlace(9...9)
        #expect(shadow.destination(forRewriteOf: 9, tearIsAnError: true) == .inPlace)
    }

    @Test func aThirdBlockBetweenTwoSyncsGoesInPlaceUntilEvictionFreesASlot() {
        var shadow = empty()
        shadow.wroteSlot(0, block: 1, nonce: [], supersedes: [])
        shadow.wroteSlot(1, block: 2, nonce: [], supersedes: [])
        #expect(shadow.destination(forRewriteOf: 5) == .busy)
        sync(&shadow)
        // Both slots hold current copies: full blocks are evicted, a partial last one stays.
        #expect(shadow.isFull)
        #expect(shadow.evictable(fullBlocks: 10) == [0, 1])
        #expect(shadow.evictable(fullBlocks: 2) == [0])
        _ = shadow.wroteInPlace(1...1)
        #expect(shadow.destination(forRewriteOf: 5) == .busy, "free only once the copy in place is durable")
        sync(&shadow)
        #expect(!shadow.isFull)
        #expect(shadow.destination(forRewriteOf: 5) == .slot(0))
    }

    @Test func whatTheFileSaysIsTakenAsDurable() {
        var shadow = ShadowSlots()
        let nonce = [UInt8](repeating: 7, count: 12)
        shadow.slots = [ShadowSlots.Copy(block: 4, nonce: nonce, supersedes: nonce, written: -1, replacedIn: nil),
                        ShadowSlots.Copy(block: 9, nonce: nonce, supersedes: nonce, written: -1, replacedIn: -1)]
        #expect(shadow.destination(forRewriteOf: 4) == .inPlace)
        #expect(shadow.destination(forRewriteOf: 9) == .slot(1))
        #expect(shadow.destination(forRewriteOf: 6) == .slot(1))
    }

    /// A write concurrent with a sync of the same file: the copy the sync covers is acknowledged
    /// once it returns, so a rewrite keeping its bytes must not tear it meanwhile, in a slot or
    /// in place.
    @Test func aRewriteWaitsForASyncUnderWayThatCoversTheCopyItReplaces() {
        var shadow = empty()
        shadow.wroteSlot(0, block: 3, nonce: [], supersedes: [])
        _ = shadow.wroteInPlace(7...7)
        let mark = shadow.beginSync()
        #expect(shadow.destination(forRewriteOf: 3) == .awaitSync)
        #expect(shadow.destination(forRewriteOf: 7) == .awaitSync)
        _ = shadow.wroteInPlace(5...5) // after the sync began: not covered by it
        #expect(shadow.destination(forRewriteOf: 5) == .inPlace)
        shadow.endSync(mark)
        #expect(shadow.destination(forRewriteOf: 3) == .inPlace)
        #expect(shadow.destination(forRewriteOf: 7) == .slot(1))
    }
}
