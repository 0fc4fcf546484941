import EpochIO
import Glibc
import Synchronization

/// One object of the backing tree, held by an O_PATH descriptor as in libfuse's passthrough_hp:
/// operations address it through `*at()` calls and `/proc/self/fd/N`, so renames and unlinks
/// of open files need no path bookkeeping.
public final class BackingNode: Sendable {
    public struct Identity: Hashable, Sendable {
        public let device: UInt64
        public let inode: UInt64

        package init(device: UInt64, inode: UInt64) {
            self.device = device
            self.inode = inode
        }
    }

    public let fd: FileDescriptor
    public let identity: Identity
    /// S_IFREG, S_IFDIR, S_IFLNK, ...
    public let fileType: mode_t
    /// The plaintext view of a regular file; nil for everything else.
    package let content: FileContent?
    /// What is known of a directory's record; nil for everything else, and on volumes older
    /// than format 4.
    let directory: DirectoryCommits?
    private let ivs: DirectoryIV
    private let io: any BackingIO
    /// A directory's name IV, read on first use.
    private let cachedIV = Mutex<[UInt8]?>(nil)

    init(fd: FileDescriptor, info: stat, volume: LiveVolume) {
        self.fd = fd
        identity = Identity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        fileType = info.st_mode & S_IFMT
        content = fileType == S_IFREG ? volume.content(of: identity) : nil
        content?.nodeCreated()
        directory = fileType == S_IFDIR && volume.directoryIVs.hasRecords ? volume.directory(of: identity) : nil
        directory?.nodeCreated()
        ivs = volume.directoryIVs
        io = volume.io
    }

    deinit {
        content?.nodeReleased()
        directory?.nodeReleased()
        io.close(fd)
    }

    var isSymlink: Bool { fileType == S_IFLNK }

    package func directoryIV() throws -> [UInt8] {
        if let iv = cachedIV.withLock({ $0 }) { return iv }
        // With its record, in the same read: a directory's first lookup reads one file, as before.
        let iv = try directory?.record(in: fd, ivs: ivs).iv ?? ivs.read(in: fd)
        cachedIV.withLock { $0 = iv }
        return iv
    }
}
