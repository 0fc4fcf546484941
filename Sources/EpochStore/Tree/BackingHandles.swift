import CLinux
import EpochIO
import Glibc

/// Backing objects reached by the backing file system's file handles rather than by name: what
/// lets the mount give out node ids that stay valid while the file exists, and find the file
/// again by one after the kernel has forgotten it (FUSE export support, docs/MOUNTING.md, "Limits and file handles").
extension BackingTree {
    /// The backing file system's handle of `node`.
    public func handle(of node: BackingNode) throws -> BackingFileHandle {
        try volume.io.nameToHandle(node.fd)
    }

    /// The object `handle` names and its plaintext attributes: ESTALE once it is gone.
    /// Shared with the namespace, as a lookup: a copy-on-write reseal replaces only a file no
    /// node holds.
    public func reopen(_ handle: BackingFileHandle) throws -> (BackingNode, stat) {
        try namespace.withReadLock {
            // The call takes no O_PATH descriptor (EBADF) to name the file system by.
            let fd = try volume.io.withOpened(".", in: root.fd, flags: O_RDONLY | O_DIRECTORY) { mount in
                try volume.io.openByHandle(handle, mount: mount, flags: epochfs_O_PATH | O_CLOEXEC)
            }
            let (node, info) = try Self.node(openedAt: fd, volume: volume)
            // A file the backing fs still holds open but no name reaches is gone for the mount too.
            guard info.st_nlink > 0 else { throw SystemError("open_by_handle_at", path: "", errno: ESTALE) }
            return (node, try plaintextAttributes(info, of: node))
        }
    }

    /// The directory holding `directory`; the root's is the root, as for `..` on the mount.
    public func parent(of directory: BackingNode) throws -> (BackingNode, stat) {
        let (node, info) = directory.identity == root.identity ? (root, try volume.io.fstat(root.fd))
            : try namespace.withReadLock { try backingNode("..", in: directory.fd) }
        return (node, try plaintextAttributes(info, of: node))
    }
}
