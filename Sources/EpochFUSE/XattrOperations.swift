import CFuse3
import EpochIO
import EpochVolume
import Glibc

/// Extended attributes: `user.` names and values stored encrypted (BackingTree); other
/// namespaces are not stored (get: ENODATA, set: EOPNOTSUPP). The control files have none (ENODATA).
extension Operations {
    static func setxattr(_ request: fuse_req_t?, _ node: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ value: UnsafePointer<CChar>?,
                         _ size: Int, _ flags: Int32) {
        replying(request, "setxattr") { fs, request in
            let value = Array(UnsafeRawBufferPointer(start: value, count: size))
            try fs.tree.setXattr(try fs.backing(node, orFail: ENODATA), name: String(cString: name!), value: value, flags: flags)
            request.replyOK()
        }
    }

    static func getxattr(_ request: fuse_req_t?, _ node: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ size: Int) {
        replying(request, "getxattr") { fs, request in
            try replyXattr(request, try fs.tree.getXattr(try fs.backing(node, orFail: ENODATA), name: String(cString: name!)), size: size)
        }
    }

    static func listxattr(_ request: fuse_req_t?, _ node: fuse_ino_t, _ size: Int) {
        replying(request, "listxattr") { fs, request in
            let names = try fs.tree.listXattrs(try fs.backing(node, orFail: ENODATA))
            try replyXattr(request, names.flatMap { Array($0.utf8) + [0] }, size: size)
        }
    }

    static func removexattr(_ request: fuse_req_t?, _ node: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        replying(request, "removexattr") { fs, request in
            try fs.tree.removeXattr(try fs.backing(node, orFail: ENODATA), name: String(cString: name!))
            request.replyOK()
        }
    }

    /// size 0 asks for the length; a buffer too small is ERANGE.
    private static func replyXattr(_ request: Request, _ bytes: [UInt8], size: Int) throws {
        if size == 0 {
            fuse_reply_xattr(request.raw, bytes.count)
        } else if size < bytes.count {
            throw SystemError("xattr", path: "", errno: ERANGE)
        } else {
            request.reply(bytes)
        }
    }
}
