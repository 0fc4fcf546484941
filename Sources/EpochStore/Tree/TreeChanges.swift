import Synchronization

/// The objects the tree changed (blocks written, cut or allocated, xattrs set or removed, a
/// symlink made, an entry removed) since they were last taken: what keeps the census of a
/// re-encryption (EpochCheck's `LiveCensus`) exact while the mount writes. Nothing is tracked
/// before the first pass, and a change costs one relaxed load then.
package final class TreeChanges: Sendable {
    private let tracking = Atomic(false)
    private let changed = Mutex(Changed())

    package struct Changed {
        /// Objects changed since they were last taken, held (an O_PATH descriptor each) until
        /// they are counted again.
        package var nodes: [BackingNode.Identity: BackingNode] = [:]
        /// More changed than are held: the whole volume is counted again instead.
        package var overflowed = false
    }

    /// Most changed objects held between two takes.
    private let heldLimit: Int

    init(heldLimit: Int = 4096) { self.heldLimit = heldLimit }

    /// Tracks every change from now on, forgetting those noted before (a pass begins).
    package func startTracking() {
        tracking.store(true, ordering: .relaxed)
        changed.withLock { $0 = Changed() }
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

    /// What changed since the last take; forgotten here.
    package func take() -> Changed {
        changed.withLock { changed in
            defer { changed = Changed() }
            return changed
        }
    }

    /// Changes were taken but could not be counted: the whole volume is, at the next take.
    package func markOverflowed() {
        changed.withLock { $0.overflowed = true }
    }
}
