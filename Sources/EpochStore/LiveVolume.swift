import EpochFormat
import EpochHeader
import EpochIO
import EpochMetrics
import EpochSystem
import Synchronization

/// A volume opened for use: its header journal, the live keyring, the counters, and the epoch
/// lock that orders sealing against a rekey. The mount serves one; offline commands open one
/// the same way, with the same backing I/O.
///
/// Whatever seals under the active epoch (file blocks, symlink targets, xattr values) does so
/// inside `sealing`, which holds the epoch lock shared until the sealed bytes are written to
/// the backing file. A rekey installs its new keyring holding the lock exclusively, so once
/// `rekey` returns, nothing still being written carries an older epoch.
public final class LiveVolume: Sendable {
    public let backing: String
    public let io: any BackingIO
    public let journal: HeaderJournal
    public let keys: VolumeKeys
    public let counters = VolumeCounters()
    /// The mount's metrics (rekeys here; requests in the FUSE frontend, through its factory).
    public let metrics: VolumeMetrics
    public let symlinks: SymlinkCodec
    public let xattrs: XattrCodec
    /// How regular files are stored in this volume (its format version, docs/FORMAT.md §6).
    public let contentLayout: ContentLayout
    private let epochLock = ReadWriteLock()
    private let current: Mutex<VolumeHeader>
    /// The content of every regular file some node holds, by backing object: one per file
    /// however many nodes reach it (the mount's, a re-encryption's, a scan's), so that all of
    /// them share its lock and its shadow slots' state. An O_PATH descriptor pins the inode, so
    /// an identity is never reused while its content lives.
    private let contents = Mutex<[BackingNode.Identity: WeakContent]>([:])

    private struct WeakContent {
        weak var content: FileContent?
    }

    /// The IV files of directories, with their records from format 4 on (docs/FORMAT.md §5.6).
    let directoryIVs: DirectoryIV
    /// What is known of every directory some node holds, by backing object, as `contents`.
    private let directories = Mutex<[BackingNode.Identity: WeakDirectory]>([:])

    private struct WeakDirectory {
        weak var commits: DirectoryCommits?
    }

    /// Files and directories changed since their last commit began, by backing object: the
    /// unmount commits them (`BackingTree.commitUncommitted`). Only on volumes with records.
    let uncommitted = Mutex<Set<BackingNode.Identity>>([])

    /// Set when the mount anchors the volume (docs/FORMAT.md §3.8): every sync it acknowledges
    /// and every header commit end with a round of it.
    public let anchor: VolumeAnchor?

    /// Opens the volume in `backing` through `journal` (failing closed on a wrong key); with
    /// `anchoring`, refuses a backing dir older than the machine's anchor (`AnchorError`).
    public init(backing: String, journal: HeaderJournal, io: any BackingIO = SystemIO(), anchoring: AnchorOptions? = nil) throws {
        let header = try journal.open()
        anchor = try anchoring.map {
            try VolumeAnchor(backing: backing, volumeID: header.volumeID, nameKey: header.keyring.nameKey, options: $0, io: io)
        }
        self.backing = backing
        self.io = io
        self.journal = journal
        keys = try VolumeKeys(header: header)
        metrics = VolumeMetrics(volumeID: header.volumeID)
        symlinks = SymlinkCodec(keys: keys)
        xattrs = try XattrCodec(keys: keys, nameKey: header.keyring.nameKey)
        contentLayout = ContentLayout(blockSize: keys.blockSize, version: header.slot.formatVersion)
        directoryIVs = DirectoryIV(io: io, directoryKey: keys.directoryKey, formatVersion: header.slot.formatVersion)
        current = Mutex(header)
    }

    /// Refuses a volume of an older format for a mount: what it writes could not keep the
    /// promises the current format makes (docs/FORMAT.md §3.1). Offline reads still work.
    public func requireCurrentFormat() throws {
        let version = header.slot.formatVersion
        guard version >= HeaderSlot.oldestMountedFormatVersion else { throw OlderFormatError(version: version) }
    }

    /// The header as last committed by this volume.
    public var header: VolumeHeader { current.withLock { $0 } }

    /// The content of the regular file `identity`, shared by every node that reaches it. One
    /// that no node holds any more is a file that may be gone: a node's deinit closes its
    /// descriptor (freeing an unlinked inode, whose number a new file may take at once) before
    /// the content it held is released. So it is never handed to a new node.
    func content(of identity: BackingNode.Identity) -> FileContent {
        contents.withLock { table in
            if let known = table[identity]?.content, known.nodeCount > 0 { return known }
            let content = FileContent(volume: self, identity: identity)
            table[identity] = WeakContent(content: content)
            return content
        }
    }

    /// The content of `identity` if some node holds it now; nil, creating nothing, otherwise.
    func liveContent(of identity: BackingNode.Identity) -> FileContent? {
        contents.withLock { table in table[identity]?.content.flatMap { $0.nodeCount > 0 ? $0 : nil } }
    }

    /// What is known of the directory `identity`, shared by every node that reaches it.
    func directory(of identity: BackingNode.Identity) -> DirectoryCommits {
        directories.withLock { table in
            if let known = table[identity]?.commits, known.nodeCount > 0 { return known } // as `content(of:)`
            let commits = DirectoryCommits(volume: self, identity: identity)
            table[identity] = WeakDirectory(commits: commits)
            return commits
        }
    }

    /// What is known of the directory `identity` if some node holds it now; nil otherwise.
    func liveDirectory(of identity: BackingNode.Identity) -> DirectoryCommits? {
        directories.withLock { table in table[identity]?.commits.flatMap { $0.nodeCount > 0 ? $0 : nil } }
    }

    func forgetDirectory(of identity: BackingNode.Identity) {
        directories.withLock { table in
            if table[identity]?.commits == nil { table.removeValue(forKey: identity) }
        }
    }

    /// A file's content is gone: its entry goes too, unless a new one took its place.
    func forgetContent(of identity: BackingNode.Identity) {
        contents.withLock { table in
            if table[identity]?.content == nil { table.removeValue(forKey: identity) }
        }
    }

    /// Runs `body` with the active epoch, which stays active until `body` returns.
    public func sealing<R>(_ body: (Epoch) throws -> R) rethrows -> R {
        try epochLock.withReadLock { try body(keys.activeEpoch) }
    }

    /// The change-key (HeaderJournal.rekey), then the new keyring goes live.
    @discardableResult
    public func rekey(to epoch: Epoch) throws -> RekeyResult {
        try metrics.timeRekey {
            let result = try journal.rekey(to: epoch)
            try adopt(result.header)
            return result
        }
    }

    /// Sets the raft cutover index in one header commit.
    @discardableResult
    public func setRaftCutover(_ index: UInt64) throws -> VolumeHeader {
        let header = try journal.setRaftCutover(index)
        try adopt(header)
        return header
    }

    /// Drops the DEKs of `epoch` in one header commit once `verify` (run under the commit lock)
    /// accepts the header it changes; the keyring without them goes live.
    @discardableResult
    public func retire(epoch: Epoch, verify: (VolumeHeader) throws -> Void) throws -> VolumeHeader {
        let header = try journal.retire(epoch: epoch, verify: verify)
        try adopt(header)
        return header
    }

    /// Makes a committed header current, unless a later commit already is (two commits from
    /// two threads may return in either order), then covers the commit by the anchor.
    private func adopt(_ header: VolumeHeader) throws {
        epochLock.withWriteLock {
            current.withLock { known in
                guard header.sequence > known.sequence else { return }
                keys.install(header.keyring)
                known = header
            }
        }
        try anchor?.cover()
    }
}

/// A volume made by an older epochfs, which this one reads but does not mount.
public struct OlderFormatError: Error, CustomStringConvertible {
    public let version: UInt16

    package init(version: UInt16) { self.version = version }

    public var description: String {
        "the volume has format \(version), "
            + (version < 2 ? "whose files a power cut during an append can damage" : "whose files carry no authenticated record of what their last fsync made durable")
            + "; this epochfs mounts formats "
            + "\(HeaderSlot.oldestMountedFormatVersion) to \(HeaderSlot.formatVersion) only. Copy the files out with `epochfs export BACKING / DIRECTORY` (which reads format "
            + "\(version)) and into a new volume made by `epochfs init`"
    }
}
