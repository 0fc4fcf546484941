import CFuse3
import CLinux
import EpochVolume
import Glibc
import Synchronization

/// One backing object the kernel knows: an `epochfs_O_PATH` descriptor of it, as in libfuse's
/// passthrough_hp. Operations address it through `*at()` calls and `/proc/self/fd/N`, so
/// renames and unlinks of open files need no path bookkeeping.
final class Inode: Sendable {
    struct Identity: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    let fd: Int32
    let identity: Identity
    let fileType: mode_t
    /// Plaintext view of a regular file; nil for everything else.
    let content: FileContent?
    /// The directory's name IV, read on first use.
    let directoryIV = Mutex<[UInt8]?>(nil)

    init(fd: Int32, identity: Identity, fileType: mode_t, content: FileContent?) {
        self.fd = fd
        self.identity = identity
        self.fileType = fileType
        self.content = content
    }

    deinit { close(fd) }

    var isSymlink: Bool { fileType == S_IFLNK }

    /// A path that reaches the object through procfs (for calls without an `*at` form).
    var procPath: String { "/proc/self/fd/\(fd)" }

    func ivOrRead() throws -> [UInt8] {
        if let iv = directoryIV.withLock({ $0 }) { return iv }
        let iv = try DirectoryIV.read(directoryFD: fd)
        directoryIV.withLock { $0 = iv }
        return iv
    }
}

/// Node ids the kernel holds, each with its lookup count. A node id is the address of its
/// `Inode`; one backing object has one `Inode` however many names reach it.
final class InodeTable: Sendable {
    private struct Entry {
        let inode: Inode
        var lookups: UInt64
    }

    private let entries = Mutex<[Inode.Identity: Entry]>([:])
    let root: Inode

    init(root: Inode) { self.root = root }

    func nodeID(of inode: Inode) -> UInt64 {
        inode === root ? UInt64(FUSE_ROOT_ID) : UInt64(UInt(bitPattern: Unmanaged.passUnretained(inode).toOpaque()))
    }

    /// The inode behind a node id the kernel sent; valid while its lookups last.
    func inode(_ nodeID: UInt64) -> Inode {
        if nodeID == UInt64(FUSE_ROOT_ID) { return root }
        return Unmanaged<Inode>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(nodeID))!).takeUnretainedValue()
    }

    /// Registers one more kernel reference to the object behind `fd` (an `epochfs_O_PATH` descriptor
    /// this call takes over), reusing the known inode of the same object.
    func remember(fd: Int32, stat info: stat, makeContent: () -> FileContent?) -> Inode {
        let identity = Inode.Identity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        if identity == root.identity {
            close(fd)
            return root
        }
        return entries.withLock { table in
            if var known = table[identity] {
                known.lookups += 1
                table[identity] = known
                close(fd)
                return known.inode
            }
            let fileType = info.st_mode & S_IFMT
            let inode = Inode(fd: fd, identity: identity, fileType: fileType, content: fileType == S_IFREG ? makeContent() : nil)
            table[identity] = Entry(inode: inode, lookups: 1)
            return inode
        }
    }

    func forget(_ nodeID: UInt64, count: UInt64) {
        guard nodeID != UInt64(FUSE_ROOT_ID) else { return }
        let identity = inode(nodeID).identity
        entries.withLock { table in
            guard var entry = table[identity] else { return }
            entry.lookups -= min(count, entry.lookups)
            table[identity] = entry.lookups == 0 ? nil : entry
        }
    }
}
