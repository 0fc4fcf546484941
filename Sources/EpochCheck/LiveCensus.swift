import EpochFormat
import EpochStore
import Synchronization

/// The census of a mounted volume (`EpochCensus`), kept exact while a re-encryption pass runs
/// and after it ended: the pass replaces what it reseals, and every object the mount changes
/// (noted by the tree in its `TreeChanges`) is counted again before the census is next read.
public final class LiveCensus: Sendable {
    private let census = Mutex<EpochCensus?>(nil)
    /// What the tree changed: the mount's tree's own (`BackingTree.changes`).
    private let changes: TreeChanges

    init(tracking changes: TreeChanges) { self.changes = changes }

    /// Counts the whole volume afresh (a pass begins). Changes from here on are tracked, those
    /// made during the count too: each is counted again at the next read.
    func begin(_ tree: BackingTree) throws {
        changes.startTracking()
        let counted = try EpochCensus(tree)
        census.withLock { $0 = counted }
    }

    /// A change the pass itself made, counted on the census as it is. `body` reads what it
    /// counts holding the census, so no read of it can come between the two.
    func update(_ body: (inout EpochCensus) throws -> Void) rethrows {
        try census.withLock { if $0 != nil { try body(&$0!) } }
    }

    /// Items of the whole volume by epoch, every change counted; nil before the first pass.
    func total(in tree: BackingTree) -> [Epoch: Int]? {
        census.withLock { census -> [Epoch: Int]? in
            guard census != nil else { return nil }
            let pending = changes.take()
            if pending.overflowed {
                do {
                    census = try EpochCensus(tree)
                } catch {
                    changes.markOverflowed() // counted at the next read
                }
            } else {
                for node in pending.nodes.values { census!.recount(node, in: tree) }
            }
            return census!.total
        }
    }
}
