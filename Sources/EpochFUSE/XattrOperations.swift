import CFuse3
import CLinux
import EpochVolume
import Glibc

/// Extended attributes: `user.` names and values stored encrypted (XattrCodec); other
/// namespaces are not stored (get: ENODATA, set: EOPNOTSUPP).
extension Operations {
    static let maxXattrValue = 65_536

    static func setxattr(_ request: fuse_req_t?, _ node: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ value: UnsafePointer<CChar>?,
                         _ size: Int, _ flags: Int32) {
        replying(request, "setxattr") { fs in
            let inode = try xattrTarget(fs, node)
            let plainName = String(cString: name!)
            guard let backing = try fs.xattrs.backingName(plainName) else { throw SystemError("setxattr", path: "", errno: EOPNOTSUPP) }
            guard !inode.isSymlink else { throw SystemError("setxattr", path: "", errno: EPERM) }
            let sealed = try fs.xattrs.sealValue(Array(UnsafeRawBufferPointer(start: value, count: size)), name: plainName)
            try check(epochfs_setxattr(inode.procPath, backing, sealed, UInt(sealed.count), flags), "setxattr")
            fuse_reply_err(request, 0)
        }
    }

    static func getxattr(_ request: fuse_req_t?, _ node: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ size: Int) {
        replying(request, "getxattr") { fs in
            let inode = try xattrTarget(fs, node)
            let plainName = String(cString: name!)
            guard let backing = try fs.xattrs.backingName(plainName), !inode.isSymlink else {
                throw SystemError("getxattr", path: "", errno: ENODATA)
            }
            var sealed = [UInt8](repeating: 0, count: maxXattrValue + 64)
            let length = epochfs_getxattr(inode.procPath, backing, &sealed, UInt(sealed.count))
            guard length >= 0 else { throw SystemError("getxattr", path: "") }
            try replyXattr(request, try fs.xattrs.openValue(Array(sealed.prefix(length)), name: plainName), size: size)
        }
    }

    static func listxattr(_ request: fuse_req_t?, _ node: fuse_ino_t, _ size: Int) {
        replying(request, "listxattr") { fs in
            let inode = try xattrTarget(fs, node)
            var names: [UInt8] = []
            if !inode.isSymlink {
                var raw = [CChar](repeating: 0, count: maxXattrValue)
                let length = epochfs_listxattr(inode.procPath, &raw, UInt(raw.count))
                guard length >= 0 else { throw SystemError("listxattr", path: "") }
                for entry in raw.prefix(length).split(separator: 0) {
                    let backing = String(decoding: entry.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                    if let plain = try fs.xattrs.name(ofBacking: backing) { names += Array(plain.utf8) + [0] }
                }
            }
            try replyXattr(request, names, size: size)
        }
    }

    static func removexattr(_ request: fuse_req_t?, _ node: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        replying(request, "removexattr") { fs in
            let inode = try xattrTarget(fs, node)
            guard let backing = try fs.xattrs.backingName(String(cString: name!)), !inode.isSymlink else {
                throw SystemError("removexattr", path: "", errno: ENODATA)
            }
            try check(epochfs_removexattr(inode.procPath, backing), "removexattr")
            fuse_reply_err(request, 0)
        }
    }

    private static func xattrTarget(_ fs: Frontend, _ node: fuse_ino_t) throws -> Inode {
        guard !ControlFiles.owns(UInt64(node)) else { throw SystemError("xattr", path: "", errno: ENODATA) }
        return fs.table.inode(UInt64(node))
    }

    /// size 0 asks for the length; a buffer too small is ERANGE.
    private static func replyXattr(_ request: fuse_req_t?, _ bytes: [UInt8], size: Int) throws {
        if size == 0 {
            fuse_reply_xattr(request, bytes.count)
        } else if size < bytes.count {
            throw SystemError("xattr", path: "", errno: ERANGE)
        } else {
            bytes.withUnsafeBytes { _ = fuse_reply_buf(request, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
        }
    }
}
