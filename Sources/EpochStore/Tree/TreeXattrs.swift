import CLinux
import EpochCrypto
import EpochFormat
import EpochIO
import Glibc

/// Extended attributes (docs/FORMAT.md §5.5).
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
                try sealed.withUnsafeBytes { try io.setxattr(node.fd, name: backing, value: $0, flags: flags) }
            } catch let error as SystemError where error.errno == E2BIG {
                // A value the kernel took whose sealed form is past XATTR_SIZE_MAX: no room
                // for it, as ext4 answers for a value its block cannot hold (docs/FORMAT.md §5.5).
                throw SystemError("setxattr", path: "", errno: ENOSPC)
            }
        } }
        changes.noteChanged(node)
    }

    public func getXattr(_ node: BackingNode, name: String) throws -> [UInt8] {
        guard let backing = try volume.xattrs.backingName(name), backing.utf8.count <= Self.maxBackingXattrName, !node.isSymlink else {
            throw SystemError("getxattr", path: "", errno: ENODATA)
        }
        var sealed = [UInt8](repeating: 0, count: Self.maxXattrValue + 64)
        let length = try sealed.withUnsafeMutableBytes { try io.getxattr(node.fd, name: backing, into: $0) }
        return try volume.xattrs.openValue(Array(sealed.prefix(length)), name: name)
    }

    /// The plaintext names of `node`'s `user.` attributes.
    public func listXattrs(_ node: BackingNode) throws -> [String] {
        guard !node.isSymlink else { return [] }
        var raw = [UInt8](repeating: 0, count: Self.maxXattrValue)
        let length = try raw.withUnsafeMutableBytes { try io.listxattr(node.fd, into: $0) }
        return try raw.prefix(length).split(separator: 0).compactMap {
            try volume.xattrs.name(ofBacking: String(decoding: $0, as: UTF8.self))
        }
    }

    public func removeXattr(_ node: BackingNode, name: String) throws {
        guard let backing = try volume.xattrs.backingName(name), backing.utf8.count <= Self.maxBackingXattrName, !node.isSymlink else {
            throw SystemError("removexattr", path: "", errno: ENODATA)
        }
        try xattrChanges.withLock { _ in try io.removexattr(node.fd, name: backing) }
        changes.noteChanged(node)
    }
}
