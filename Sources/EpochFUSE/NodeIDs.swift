import CFuse3
import EpochIO
import EpochStore
import EpochVolume
import Glibc

/// How the node ids the kernel gets for backing objects are made. Where the backing file
/// system's file handles fit in 8 bytes (ext2/3/4, XFS with 32-bit inode numbers: inode number
/// and generation), a node id is the handle itself: the same for a file for as long as it
/// exists, across remounts too, so the kernel may forget a node and still ask for it again by
/// a LOOKUP of "." in its id (FUSE export support: `open_by_handle_at` on the mount, an NFS
/// export of it). Elsewhere (tmpfs, btrfs: longer handles) it is the in-memory node's
/// address, valid only while the kernel holds it.
struct NodeIDs: Sendable {
    /// The handles' type and length on this backing file system, when they fit in a node id.
    private let handleFormat: (type: Int32, length: Int)?
    /// Whether a forgotten node can be found again: handles fit, and the daemon may open by
    /// handle (CAP_DAC_READ_SEARCH).
    let exportable: Bool

    init(probing tree: BackingTree) {
        guard let rootHandle = try? tree.handle(of: tree.root), rootHandle.bytes.count <= 8 else {
            handleFormat = nil
            exportable = false
            return
        }
        handleFormat = (rootHandle.type, rootHandle.bytes.count)
        exportable = (try? tree.reopen(rootHandle)) != nil
    }

    /// The node id of `node`, which is not the root.
    func nodeID(of node: BackingNode, in tree: BackingTree) throws -> UInt64 {
        guard let handleFormat else { return UInt64(UInt(bitPattern: Unmanaged.passUnretained(node).toOpaque())) }
        let handle = try tree.handle(of: node)
        let id = handle.bytes.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        // Every handle of one backing file system has the root's form; an id a control file
        // or the root has cannot be given (neither happens on ext4, whose root inode is 2).
        guard handle.type == handleFormat.type, handle.bytes.count == handleFormat.length,
              id > ControlFiles.metricsID else {
            throw SystemError("name_to_handle_at", path: "", errno: EOVERFLOW)
        }
        return id
    }

    /// The backing handle a node id stands for, when node ids are handles.
    func handle(of nodeID: UInt64) -> BackingFileHandle? {
        guard let handleFormat, nodeID > ControlFiles.metricsID else { return nil }
        let bytes = (0..<handleFormat.length).map { UInt8(truncatingIfNeeded: nodeID >> (8 * UInt64($0))) }
        return BackingFileHandle(type: handleFormat.type, bytes: bytes)
    }
}
