import CLinux
import EpochIO
import Glibc

/// Who makes a call, for the set-ID rules (`BackingTree.dropSetIDBits`): root, who has
/// CAP_FSETID, or a user and the groups they are in. A uid literal is a caller in no group
/// (the offline commands act as root: `caller: 0`).
public struct Caller: ExpressibleByIntegerLiteral {
    public let user: uid_t
    private let isMember: (gid_t) -> Bool

    /// `isMember` answers whether the caller is in a group; asked only when a rule needs it.
    public init(user: uid_t, isMember: @escaping (gid_t) -> Bool) {
        self.user = user
        self.isMember = isMember
    }

    public init(integerLiteral user: uid_t) { self.init(user: user) { _ in false } }

    func isIn(group: gid_t) -> Bool { user == 0 || isMember(group) }
}

/// The set-ID rules of ext4 (the VFS's since Linux 6.2). The backing file system does not
/// apply them for the callers, since the daemon makes and changes every backing object as root.
extension BackingTree {
    /// On a write, truncate or fallocate by a caller without CAP_FSETID (anyone but root):
    /// set-user-ID goes, and set-group-ID where the group may execute or the caller is not
    /// in the file's group (generic/683-685).
    func dropSetIDBits(_ fd: FileDescriptor, caller: Caller) throws {
        guard caller.user != 0 else { return }
        let info = try volume.io.fstat(fd)
        let mode = info.st_mode & 0o7777
        var kept = mode & ~S_ISUID
        if kept & S_ISGID != 0, kept & S_IXGRP != 0 || !caller.isIn(group: info.st_gid) { kept &= ~S_ISGID }
        guard kept != mode else { return }
        try volume.io.fchmod(fd, mode: kept)
    }

    /// `dropSetIDBits` for the object `node` holds, not through an open file: a chown to the
    /// same owner, or the kernel asking for the bits to go (before a fallocate).
    public func dropSetIDBits(of node: BackingNode, caller: Caller) throws {
        guard node.content != nil else { return }
        try dropSetIDBits(node.fd, caller: caller)
    }

    /// The group a new entry in `directory` made for `owner` gets: the directory's when it is
    /// set-group-ID (a new subdirectory keeps the bit: the backing mkdir gives it), else the
    /// owner's own (generic/633, 696).
    func group(forNewEntryOf owner: Owner, in directory: BackingNode) throws -> gid_t {
        let info = try volume.io.fstat(directory.fd)
        return info.st_mode & S_ISGID != 0 ? info.st_gid : owner.group
    }

    /// Gives the new entry `name` in `directory` to `owner`. A chown clears the set-ID bits of
    /// a non-directory, even as root; those the entry was made with (the kernel already took
    /// away what the caller may not set) are put back.
    func giveNewEntry(_ name: String, in directory: BackingNode, to owner: Owner) throws {
        let io = volume.io
        let made = try io.fstatat(name, in: directory.fd)
        try io.fchownat(name, in: directory.fd, owner: owner.user, group: try group(forNewEntryOf: owner, in: directory))
        let setID = made.st_mode & (S_ISUID | S_ISGID)
        guard setID != 0, made.st_mode & S_IFMT == S_IFREG else { return }
        try io.withOpened(name, in: directory.fd, flags: epochfs_O_PATH | O_NOFOLLOW) { try io.fchmod($0, mode: made.st_mode & 0o7777) }
    }
}
