import CLinux
import EpochCrypto
import EpochFormat
import EpochIO
import Glibc

/// Extended attributes (docs/FORMAT.md §5.5), checked against their object's record where it
/// binds them (format 5, `AttributeIntegrity`).
extension BackingTree {
    /// Sets a `user.` attribute, its value sealed under the active epoch. Other namespaces are
    /// not stored (EOPNOTSUPP); symlinks take none (EPERM).
    public func setXattr(_ node: BackingNode, name: String, value: [UInt8], flags: Int32) throws {
        guard let backing = try volume.xattrs.backingName(name) else { throw SystemError("setxattr", path: "", errno: EOPNOTSUPP) }
        // ERANGE, as the kernel answers for a name past XATTR_NAME_MAX.
        guard backing.utf8.count <= Self.maxBackingXattrName else { throw SystemError("setxattr", path: "", errno: ERANGE) }
        guard !node.isSymlink else { throw SystemError("setxattr", path: "", errno: EPERM) }
        try volume.sealing { epoch in try xattrChanges.withLock { _ in
            let sealed = try volume.xattrs.sealValue(value, name: name, epoch: epoch)
            do {
                try changeAttribute(node, name: backing, value: sealed, flags: flags)
            } catch let error as SystemError where error.errno == E2BIG {
                // A value the kernel took whose sealed form is past XATTR_SIZE_MAX: no room
                // for it, as ext4 answers for a value its block cannot hold (docs/FORMAT.md §5.5).
                throw SystemError("setxattr", path: "", errno: ENOSPC)
            }
        } }
        changes.noteChanged(node)
    }

    public func getXattr(_ node: BackingNode, name: String) throws -> [UInt8] {
        guard let backing = try volume.xattrs.backingName(name), backing.utf8.count <= Self.maxBackingXattrName, !node.isSymlink,
              let sealed = try xattrChanges.withLock({ _ in try checkedAttributes(node) }).values[backing] else {
            throw SystemError("getxattr", path: "", errno: ENODATA)
        }
        return try volume.xattrs.openValue(sealed, name: name)
    }

    /// The plaintext names of `node`'s `user.` attributes.
    public func listXattrs(_ node: BackingNode) throws -> [String] {
        guard !node.isSymlink else { return [] }
        return try xattrChanges.withLock { _ in try checkedAttributes(node) }.names.compactMap { try volume.xattrs.name(ofBacking: $0) }
    }

    public func removeXattr(_ node: BackingNode, name: String) throws {
        guard let backing = try volume.xattrs.backingName(name), backing.utf8.count <= Self.maxBackingXattrName, !node.isSymlink else {
            throw SystemError("removexattr", path: "", errno: ENODATA)
        }
        try xattrChanges.withLock { _ in try changeAttribute(node, name: backing, value: nil) }
        changes.noteChanged(node)
    }
}
