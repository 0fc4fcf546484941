import EpochFormat
import EpochIO
import EpochStore
import Glibc

/// How far a re-encryption got, and what it found.
public struct ReencryptionProgress: Sendable {
    /// The epoch items are resealed under (the active one; a rekey during the walk moves it).
    public var target: Epoch = 0
    /// Blocks of regular files looked at in this pass (resealed, at the target already, holes or
    /// unreadable), of all there are (counted at the start of the pass).
    public var blocksDone = 0
    public var blocksTotal = 0
    /// Since the walk started, over all passes.
    public var blocks = ResealCount()
    public var symlinksResealed = 0
    public var xattrsResealed = 0
    /// Items left naming each epoch by this pass so far (blocks, symlink targets, xattr values);
    /// after a whole pass, the epochs the volume still references.
    public var keyIDs: [Epoch: Int] = [:]
    /// Seconds since the walk started, and plaintext bytes of the blocks looked at meanwhile.
    public var seconds = 0.0
    public var bytesDone = 0

    public init() {}

    /// Plaintext MB (10^6 bytes) per second of blocks looked at.
    public var megabytesPerSecond: Double { seconds > 0 ? Double(bytesDone) / 1e6 / seconds : 0 }

    /// Seconds left at the speed so far; nil before there is a speed.
    public var secondsLeft: Double? {
        guard blocksDone > 0, seconds > 0 else { return nil }
        return Double(blocksTotal - blocksDone) * seconds / Double(blocksDone)
    }
}

/// Re-encryption: every file block, symlink target and xattr value of a volume that names an
/// epoch older than the active one is resealed under the active epoch with the same plaintext,
/// through the same tree and content code the mount uses (so it may run while the mount
/// serves). Resealing is idempotent and each item is replaced atomically (FileContent,
/// BackingTree), so a walk stopped or killed at any moment leaves every item readable and a
/// new walk finishes the job, skipping what is at the active epoch already. A regular file of
/// one link that nothing else holds is resealed whole by copy-on-write
/// (`BackingTree.resealByCopy`), streamed in large chunks; others block by block in place,
/// through the shadow slots (`FileContent.resealOlderBlocks`). A pass that ends
/// under another active epoch than it began (a rekey meanwhile) is followed by another.
public struct Reencryption {
    /// Blocks resealed under one hold of a file's lock.
    public static let offlineChunk = 256

    private let tree: BackingTree
    private let chunk: Int
    private let copyLimit: Int
    private let report: (ReencryptionProgress) -> Bool
    private let clock = ContinuousClock()
    private let started: ContinuousClock.Instant
    private var progress = ReencryptionProgress()
    /// The mount's census, which the walk counts afresh at each pass and keeps exact.
    private let census: LiveCensus?
    private var resealedFiles: Set<BackingNode.Identity> = []
    /// Link files the symlinks walked use (FORMAT.md §5.4).
    private var linkFilesInUse: Set<String> = []

    private var io: any BackingIO { tree.volume.io }

    /// Re-encrypts `tree`'s volume, `chunk` blocks of a file resealed in place at a time, files
    /// of up to `copyLimit` plaintext bytes by copy-on-write where they may be. `report` gets the
    /// progress after each chunk, each file copied and each item; it returns false to stop the
    /// walk there (a later walk resumes it). Offline (`offline`), a complete pass also removes
    /// the link files an earlier, killed walk left unused. With `census` (a mount's), each pass
    /// first counts the whole volume's items by epoch and keeps the count exact as it reseals.
    /// Returns the progress as the last pass left it.
    @discardableResult
    public static func run(_ tree: BackingTree, chunk: Int = offlineChunk, copyLimit: Int = .max, offline: Bool = false,
                           census: LiveCensus? = nil,
                           report: @escaping (ReencryptionProgress) -> Bool = { _ in true }) throws -> ReencryptionProgress {
        var walk = Reencryption(tree: tree, chunk: chunk, copyLimit: copyLimit, census: census, report: report)
        while true {
            walk.progress.target = tree.volume.keys.activeEpoch
            walk.progress.keyIDs = [:]
            walk.progress.blocksDone = 0
            walk.resealedFiles = []
            walk.linkFilesInUse = []
            var seen: Set<BackingNode.Identity> = []
            walk.progress.blocksTotal = try VolumeScan.storedFiles(in: tree.root.fd, layout: tree.volume.contentLayout, io: tree.volume.io,
                                                                   seen: &seen).blocks
            try census?.begin(tree)
            guard try walk.reseal(directory: tree.root) else { return walk.progress }
            if offline { _ = try tree.removeLinkFiles(except: walk.linkFilesInUse) }
            guard tree.volume.keys.activeEpoch != walk.progress.target else { return walk.progress }
        }
    }

    private init(tree: BackingTree, chunk: Int, copyLimit: Int, census: LiveCensus?, report: @escaping (ReencryptionProgress) -> Bool) {
        self.tree = tree
        self.chunk = chunk
        self.copyLimit = copyLimit
        self.census = census
        self.report = report
        started = clock.now
    }

    private mutating func proceed() -> Bool {
        let elapsed = clock.now - started
        progress.seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return report(progress)
    }

    /// The attributes of `directory` and everything under it; false when told to stop.
    private mutating func reseal(directory: BackingNode) throws -> Bool {
        let entries: [DirectoryEntry]
        do {
            let handle = try tree.openDirectory(directory)
            defer { tree.close(handle) }
            entries = try io.readdir(handle).sorted { $0.name < $1.name }
        } catch let error as SystemError where error.errno == ENOENT {
            return true // removed meanwhile (on a mount)
        }
        try resealXattrs(directory)
        for entry in entries where !NameCodec.isInternal(entry.name) {
            let node: BackingNode
            do {
                node = try tree.backingNode(entry.name, in: directory.fd).node
            } catch let error as SystemError where error.errno == ENOENT {
                continue
            }
            switch node.fileType {
            case S_IFDIR:
                guard try reseal(directory: node) else { return false }
            case S_IFREG:
                // Hard links share one object: resealed once.
                guard resealedFiles.insert(node.identity).inserted else { continue }
                try resealXattrs(node)
                if let copied = try tree.resealByCopy(node, named: entry.name, in: directory, maxSize: copyLimit) {
                    recountReplaced(node, named: entry.name, in: directory)
                    add(copied, bytes: Int(try tree.attributes(of: node).st_size))
                    guard proceed() else { return false }
                } else {
                    guard try resealBlocks(node) else { return false }
                }
            case S_IFLNK:
                let (resealed, keyID, linkFile) = try tree.resealSymlink(entry.name, in: directory)
                if let linkFile { linkFilesInUse.insert(linkFile) }
                if resealed { progress.symlinksResealed += 1 }
                if let keyID { progress.keyIDs[keyID, default: 0] += 1 }
                recountReplaced(node, named: entry.name, in: directory)
                guard proceed() else { return false }
            default:
                continue // fifos, sockets and devices hold nothing sealed
            }
        }
        return true
    }

    private mutating func resealXattrs(_ node: BackingNode) throws {
        let (resealed, keyIDs) = try tree.resealXattrs(node)
        progress.xattrsResealed += resealed
        progress.keyIDs.merge(keyIDs, uniquingKeysWith: +)
        census?.update { $0.recountXattrs(node, in: tree) }
    }

    /// `node`, stored as `name` in `directory`, was replaced by a resealed copy: the census
    /// counts it gone and the copy there now.
    private func recountReplaced(_ node: BackingNode, named name: String, in directory: BackingNode) {
        census?.update { census in
            census.recount(node, in: tree)
            if let copy = try? tree.backingNode(name, in: directory.fd).node { census.recount(copy, in: tree) }
        }
    }

    /// The blocks of the regular file `node` a chunk at a time; false when told to stop.
    private mutating func resealBlocks(_ node: BackingNode) throws -> Bool {
        try tree.withResealHandle(node) { handle, content in
            let blockSize = tree.volume.contentLayout.blockSize
            var first = 0
            while true {
                let size = try content.size(fd: handle)
                guard first * blockSize < size else { return true }
                let blocks = first..<(first + chunk)
                let count = try content.resealOlderBlocks(fd: handle, in: blocks)
                try census?.update { census in
                    census.replaceBlocks(of: node.identity, from: blocks.lowerBound, by: try content.storedKeyIDs(fd: handle, in: blocks))
                }
                add(count, bytes: min(size, blocks.upperBound * blockSize) - blocks.lowerBound * blockSize)
                first = blocks.upperBound
                guard proceed() else { return false }
            }
        } ?? true
    }

    /// Adds what a reseal of `bytes` plaintext bytes of a file did to the progress.
    private mutating func add(_ count: ResealCount, bytes: Int) {
        progress.blocks += count
        progress.keyIDs.merge(count.keyIDs, uniquingKeysWith: +)
        progress.blocksDone += count.resealed + count.current + count.unreadable
        // Files written meanwhile (a live mount) can hold more blocks than the count at the start.
        progress.blocksTotal = max(progress.blocksTotal, progress.blocksDone)
        progress.bytesDone += bytes
    }
}
