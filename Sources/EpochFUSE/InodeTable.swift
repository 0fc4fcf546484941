import CFuse3
import EpochStore
import EpochVolume
import Synchronization

/// Node ids the kernel holds, each with its lookup count. One backing object has one node
/// however many names reach it; its node id is made by `NodeIDs`. Ids 2...5 are the control
/// files' (`ControlFiles`), which no backing node gets.
final class InodeTable: Sendable {
    private struct Entry {
        let node: BackingNode
        let nodeID: UInt64
        var lookups: UInt64
    }

    private struct Entries {
        var byIdentity: [BackingNode.Identity: Entry] = [:]
        var byNodeID: [UInt64: BackingNode.Identity] = [:]
    }

    private let entries = Mutex(Entries())
    let root: BackingNode
    let ids: NodeIDs

    init(root: BackingNode, ids: NodeIDs) {
        self.root = root
        self.ids = ids
    }

    /// The node behind a node id the kernel holds; nil for one it has forgotten.
    func node(_ nodeID: UInt64) -> BackingNode? {
        if nodeID == UInt64(FUSE_ROOT_ID) { return root }
        return entries.withLock { table in table.byNodeID[nodeID].flatMap { table.byIdentity[$0]?.node } }
    }

    /// Registers one more kernel reference to the object `found` stands for: the node already
    /// known for it (and `found` is dropped, closing its descriptor), or `found` itself; and
    /// its node id.
    func remember(_ found: BackingNode, in tree: BackingTree) throws -> (node: BackingNode, id: UInt64) {
        if found.identity == root.identity { return (root, UInt64(FUSE_ROOT_ID)) }
        if let known = entries.withLock({ Self.addLookup(found.identity, in: &$0) }) { return known }
        // Made outside the lock: a handle takes a system call.
        let nodeID = try ids.nodeID(of: found, in: tree)
        return entries.withLock { table in
            if let known = Self.addLookup(found.identity, in: &table) { return known }
            table.byIdentity[found.identity] = Entry(node: found, nodeID: nodeID, lookups: 1)
            table.byNodeID[nodeID] = found.identity
            return (found, nodeID)
        }
    }

    private static func addLookup(_ identity: BackingNode.Identity, in table: inout Entries) -> (node: BackingNode, id: UInt64)? {
        guard var known = table.byIdentity[identity] else { return nil }
        known.lookups += 1
        table.byIdentity[identity] = known
        return (known.node, known.nodeID)
    }

    func forget(_ nodeID: UInt64, count: UInt64) {
        guard nodeID != UInt64(FUSE_ROOT_ID) else { return }
        let released = entries.withLock { table -> BackingNode? in
            guard let identity = table.byNodeID[nodeID], var entry = table.byIdentity[identity] else { return nil }
            entry.lookups -= min(count, entry.lookups)
            guard entry.lookups == 0 else {
                table.byIdentity[identity] = entry
                return nil
            }
            table.byNodeID[nodeID] = nil
            return table.byIdentity.removeValue(forKey: identity)?.node
        }
        // Dropped here, not under the lock: closing the last descriptor of an unlinked file
        // frees its blocks, which takes long enough to stall every other request (`rm -rf`).
        withExtendedLifetime(released) {}
    }
}
