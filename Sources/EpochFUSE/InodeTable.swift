import CFuse3
import EpochVolume
import Synchronization

/// Node ids the kernel holds, each with its lookup count. A node id is the address of its
/// `BackingNode`; one backing object has one node however many names reach it. Ids 2...5 are
/// the control files' (`ControlFiles`), which no allocation can have.
final class InodeTable: Sendable {
    private struct Entry {
        let node: BackingNode
        var lookups: UInt64
    }

    private let entries = Mutex<[BackingNode.Identity: Entry]>([:])
    let root: BackingNode

    init(root: BackingNode) { self.root = root }

    func nodeID(of node: BackingNode) -> UInt64 {
        node === root ? UInt64(FUSE_ROOT_ID) : UInt64(UInt(bitPattern: Unmanaged.passUnretained(node).toOpaque()))
    }

    /// The node behind a node id the kernel sent; valid while its lookups last.
    func node(_ nodeID: UInt64) -> BackingNode {
        if nodeID == UInt64(FUSE_ROOT_ID) { return root }
        return Unmanaged<BackingNode>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(nodeID))!).takeUnretainedValue()
    }

    /// Registers one more kernel reference to the object `found` stands for: the node already
    /// known for it (and `found` is dropped, closing its descriptor), or `found` itself.
    func remember(_ found: BackingNode) -> BackingNode {
        if found.identity == root.identity { return root }
        return entries.withLock { table in
            if var known = table[found.identity] {
                known.lookups += 1
                table[found.identity] = known
                return known.node
            }
            table[found.identity] = Entry(node: found, lookups: 1)
            return found
        }
    }

    func forget(_ nodeID: UInt64, count: UInt64) {
        guard nodeID != UInt64(FUSE_ROOT_ID) else { return }
        let identity = node(nodeID).identity
        let released = entries.withLock { table -> BackingNode? in
            guard var entry = table[identity] else { return nil }
            entry.lookups -= min(count, entry.lookups)
            guard entry.lookups == 0 else {
                table[identity] = entry
                return nil
            }
            return table.removeValue(forKey: identity)?.node
        }
        // Dropped here, not under the lock: closing the last descriptor of an unlinked file
        // frees its blocks, which takes long enough to stall every other request (`rm -rf`).
        withExtendedLifetime(released) {}
    }
}
