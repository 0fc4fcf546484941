import EpochFormat
import Synchronization

/// The census of a mounted volume (`EpochCensus`), kept exact while a re-encryption pass runs
/// and after it ended: the pass replaces what it reseals, and every object the mount changes
/// (blocks written, cut or allocated, xattrs set or removed, a symlink made, an entry removed)
/// is counted again before the census is next read. Nothing is tracked before the first pass,
/// and a change costs one relaxed load then.
public final class LiveCensus: Sendable {
    private let census = Mutex<EpochCensus?>(nil)
    private let tracking = Atomic(false)
    private let changed = Mutex(Changed())

    private struct Changed {
        /// Objects changed since the census was last read, held (an O_PATH descriptor each)
        /// until they are counted again.
        var nodes: [BackingNode.Identity: BackingNode] = [:]
        /// More changed than are held: the whole volume is counted again instead.
        var overflowed = false
    }

    /// Most changed objects held between two reads of the census.
    private let heldLimit: Int

    init(heldLimit: Int = 4096) { self.heldLimit = heldLimit }

    /// Counts the whole volume afresh (a pass begins). Changes from here on are tracked, those
    /// made during the count too: each is counted again at the next read.
    func begin(_ tree: BackingTree) throws {
        tracking.store(true, ordering: .relaxed)
        changed.withLock { $0 = Changed() }
        let counted = try EpochCensus(tree)
        census.withLock { $0 = counted }
    }

    /// The object `node` changed (after the change is made, so that a read of the census
    /// racing with it counts it again later).
    func noteChanged(_ node: BackingNode?) {
        guard let node, tracking.load(ordering: .relaxed) else { return }
        changed.withLock { changed in
            guard !changed.overflowed else { return }
            changed.nodes[node.identity] = node
            if changed.nodes.count > heldLimit {
                changed.nodes = [:]
                changed.overflowed = true
            }
        }
    }

    /// The object named `name` in `directory`, held for `noteChanged` once a removal (or a
    /// rename over it) is done; nil when nothing is tracked.
    func objectBeforeRemoval(_ name: String, in directory: BackingNode, of tree: BackingTree) -> BackingNode? {
        guard tracking.load(ordering: .relaxed) else { return nil }
        return try? tree.backingNode(name, in: directory.fd).node
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
            let pending = changed.withLock { changed in
                defer { changed = Changed() }
                return changed
            }
            if pending.overflowed {
                do {
                    census = try EpochCensus(tree)
                } catch {
                    changed.withLock { $0.overflowed = true } // counted at the next read
                }
            } else {
                for node in pending.nodes.values { census!.recount(node, in: tree) }
            }
            return census!.total
        }
    }
}
