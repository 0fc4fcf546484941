import CLinux
import EpochCrypto
import EpochFormat
import EpochHeader
import EpochIO
import EpochStore
import Glibc

/// One thing a volume scan looked at: a header slot, a directory IV, a name, a block, a symlink
/// target, an xattr value or a side file (docs/FORMAT.md §1, §3, §5, §6).
public struct ScanItem: Sendable {
    public enum Kind: Sendable, Equatable {
        case headerSlot(Int)
        case directoryIV
        /// A directory's record (format 4): what its last commit found in it.
        case directoryRecord
        case name
        /// A regular file's 18-byte header (version, file id).
        case fileHeader
        case block(Int)
        case symlinkTarget
        case xattr(backingName: String, name: String?)
        /// An object's set of attributes, against what its record binds (format 5, §5.5).
        case attributeSet
        /// `epochfs.long.<hash>.name`.
        case longNameFile
        /// `epochfs.links/<hash>`.
        case linkFile

        public var label: String {
            switch self {
            case let .headerSlot(index): "header slot \(index == 0 ? "A" : "B")"
            case .directoryIV: "directory IV"
            case .directoryRecord: "directory record"
            case .name: "name"
            case .fileHeader: "file header"
            case let .block(index): "block \(index)"
            case .symlinkTarget: "symlink target"
            case let .xattr(_, name): "xattr \(name ?? "(name does not decrypt)")"
            case .attributeSet: "attribute set"
            case .longNameFile: "long-name side file"
            case .linkFile: "link file"
            }
        }

        /// The words summaries count items in ("blocks", "xattrs", ...).
        var category: String {
            switch self {
            case .headerSlot: "header slots"
            case .directoryIV: "directory IVs"
            case .directoryRecord: "directory records"
            case .name: "names"
            case .fileHeader: "file headers"
            case .block: "blocks"
            case .symlinkTarget: "symlinks"
            case .xattr: "xattrs"
            case .attributeSet: "attribute sets"
            case .longNameFile, .linkFile: "side files"
            }
        }
    }

    public enum Problem: Sendable, Equatable, CustomStringConvertible {
        /// Does not decode or authenticate (or cannot be read at all).
        case damaged(String)
        /// Names an epoch whose keys were retired.
        case retiredKey(Epoch)
        /// Names an epoch the keyring does not hold: the header may have lost a commit (a
        /// restored older header, a damaged newest slot), so a header backup may still open it.
        case unknownKey(Epoch)
        /// A directory IV missing or not 16 bytes.
        case lostIV(String)
        /// A side file no entry needs.
        case orphaned

        public var description: String {
            switch self {
            case let .damaged(reason): reason
            case let .retiredKey(epoch): "retired key id \(epoch)"
            case let .unknownKey(epoch): "key id \(epoch) is not in the keyring (a newer header may hold it)"
            case let .lostIV(reason): "lost: \(reason)"
            case .orphaned: "orphaned: no entry needs it"
            }
        }
    }

    public let kind: Kind
    /// The plaintext path ("/d/f") when every name on the way decrypts; nil otherwise.
    public let path: String?
    /// The object's path relative to the backing directory ("." for the root).
    public let backingPath: String
    /// The object a block, symlink target or xattr value belongs to.
    public let object: BackingNode.Identity?
    /// The epoch the item is sealed under, where it names one.
    public let keyID: Epoch?
    public let problem: Problem?

    /// The plaintext path if known, else the backing path.
    public var location: String { path ?? "backing:" + backingPath }
}

/// What a scan found, beyond the items themselves.
public struct ScanSummary: Sendable {
    /// Items looked at, by `Kind.category`.
    public internal(set) var counts: [String: Int] = [:]
    /// Items naming each epoch, by key id.
    public internal(set) var keyIDs: [Epoch: Int] = [:]
    public internal(set) var problems: [ScanItem] = []
    /// Objects earlier repairs kept in `epochfs.lost/` (outside the plaintext tree).
    public internal(set) var keptByRepair = 0

    public var isClean: Bool { problems.isEmpty }
}

/// How far a scan got: stored file bytes read of all there are (the file bytes of the
/// backing directory, counted before the scan starts).
public struct ScanProgress: Sendable {
    public var bytesDone = 0
    public var bytesTotal = 0
    public var items = 0
}

/// A walk of every item of a volume's backing directory through the same code the mount uses
/// (BackingTree, FileContent, the name, symlink and xattr codecs), without trusting that any
/// of it is intact: what does not decrypt is reported and the walk goes on. Objects are reached
/// through their backing names, so a file whose name does not decrypt still has its blocks
/// checked (under its backing path). It writes nothing. fsck, retire and re-encryption use it.
public struct VolumeScan {
    /// Directory of the backing root where repairs keep what they took out of the tree.
    static let lostDirectory = "epochfs.lost"

    private let tree: BackingTree
    /// Whether items are opened (checked) or only their key ids read.
    private let opening: Bool
    private let visit: (ScanItem) -> Void
    private let report: (ScanProgress) -> Void
    private var summary = ScanSummary()
    private var progress = ScanProgress()
    private var scannedFiles: Set<BackingNode.Identity> = []
    private var referencedLinkFiles: Set<String> = []

    private var io: any BackingIO { tree.volume.io }
    private var volume: LiveVolume { tree.volume }

    /// Scans `tree`'s volume: both header slots, then the tree from its root, then the link
    /// files. `visit` gets every item, `report` the progress now and then. Without `opening`,
    /// blocks, symlink targets and xattr values are not opened: only the key ids they name are
    /// read (a census, much cheaper than a check).
    public static func run(_ tree: BackingTree, opening: Bool = true, visit: @escaping (ScanItem) -> Void = { _ in },
                           report: @escaping (ScanProgress) -> Void = { _ in }) throws -> ScanSummary {
        var scan = VolumeScan(tree: tree, opening: opening, visit: visit, report: report)
        var seen: Set<BackingNode.Identity> = []
        scan.progress.bytesTotal = try storedFiles(in: tree.root.fd, layout: tree.volume.contentLayout, io: tree.volume.io, seen: &seen).bytes
        scan.scanHeaderSlots()
        scan.scanXattrs(tree.root, path: "/", backingPath: ".")
        scan.scanDirectory(tree.root, path: "/", backingPath: ".")
        try scan.scanLinkFiles()
        report(scan.progress)
        return scan.summary
    }

    /// The items of the one object `node` (its xattrs, and its blocks or symlink target unless
    /// `xattrsOnly`), key ids read only: what a census counts for it.
    static func census(of node: BackingNode, in tree: BackingTree, xattrsOnly: Bool = false) -> [ScanItem] {
        var items: [ScanItem] = []
        var scan = VolumeScan(tree: tree, opening: false, visit: { items.append($0) }, report: { _ in })
        let backingPath = "(object \(node.identity.inode))"
        switch node.fileType {
        case S_IFREG, S_IFDIR:
            scan.scanXattrs(node, path: nil, backingPath: backingPath)
            if node.fileType == S_IFREG && !xattrsOnly { scan.scanBlocks(node, path: nil, backingPath: backingPath) }
        case S_IFLNK where !xattrsOnly: scan.scanSymlink(node, path: nil, backingPath: backingPath)
        default: break
        }
        return items
    }

    private init(tree: BackingTree, opening: Bool, visit: @escaping (ScanItem) -> Void, report: @escaping (ScanProgress) -> Void) {
        self.tree = tree
        self.opening = opening
        self.visit = visit
        self.report = report
    }

    private mutating func emit(_ kind: ScanItem.Kind, path: String?, backingPath: String, object: BackingNode? = nil,
                               keyID: Epoch? = nil, problem: ScanItem.Problem? = nil) {
        let item = ScanItem(kind: kind, path: path, backingPath: backingPath, object: object?.identity, keyID: keyID, problem: problem)
        summary.counts[kind.category, default: 0] += 1
        if let keyID { summary.keyIDs[keyID, default: 0] += 1 }
        if problem != nil { summary.problems.append(item) }
        progress.items += 1
        visit(item)
    }

    // MARK: Header

    private mutating func scanHeaderSlots() {
        let current = volume.header
        for index in 0..<2 {
            var problem: ScanItem.Problem?
            do {
                let slot = try HeaderSlot.decode(try volume.journal.store.read(slot: index))
                if slot.volumeID != current.volumeID { problem = .damaged("holds volume \(slot.volumeID), not \(current.volumeID)") }
            } catch HeaderSlotError.empty {
                // Never written: a volume that has had no second commit yet.
            } catch {
                problem = .damaged("\(error)")
            }
            emit(.headerSlot(index), path: nil, backingPath: FileHeaderStore.fileName, problem: problem)
        }
    }

    // MARK: Directories

    private mutating func scanDirectory(_ directory: BackingNode, path: String?, backingPath: String) {
        let entries: [DirectoryEntry]
        let handle: FileDescriptor
        do {
            handle = try tree.openDirectory(directory)
            entries = try io.readdir(handle).sorted { $0.name < $1.name }
        } catch {
            emit(.directoryIV, path: path, backingPath: backingPath, problem: .damaged("directory cannot be listed: \(error)"))
            return
        }
        defer { tree.close(handle) }
        var iv: [UInt8]?
        do {
            iv = try tree.ivs.read(in: handle)
            emit(.directoryIV, path: path, backingPath: backingPath)
        } catch {
            emit(.directoryIV, path: path, backingPath: backingPath, problem: .lostIV("\(error)"))
        }
        if iv != nil, tree.ivs.hasRecords {
            do {
                let findings = try tree.recordFindings(of: directory)
                emit(.directoryRecord, path: path, backingPath: backingPath, problem: findings.isEmpty ? nil : .damaged(findings.joined(separator: "; ")))
            } catch {
                emit(.directoryRecord, path: path, backingPath: backingPath, problem: .damaged("\(error)"))
            }
        }
        let names = Set(entries.map(\.name))
        let isRoot = backingPath == "."
        for entry in entries {
            let entryPath = Self.join(backingPath, entry.name)
            if NameCodec.isLongNameSideFile(entry.name) {
                let orphaned = !names.contains(String(entry.name.dropLast(NameCodec.longNameSuffix.count)))
                emit(.longNameFile, path: nil, backingPath: entryPath, problem: orphaned ? .orphaned : nil)
            } else if isRoot && entry.name == Self.lostDirectory {
                summary.keptByRepair = (try? io.readdir(at: volume.backing + "/" + Self.lostDirectory).count) ?? 0
            } else if !NameCodec.isInternal(entry.name) {
                scanEntry(entry.name, in: directory, handle: handle, iv: iv, parentPath: path, backingPath: entryPath)
            }
        }
    }

    /// An entry's name, then the object under it, whether or not the name decrypts.
    private mutating func scanEntry(_ name: String, in directory: BackingNode, handle: FileDescriptor, iv: [UInt8]?,
                                    parentPath: String?, backingPath: String) {
        var path: String?
        do {
            guard let iv else { throw ScanFailure("the directory's IV is lost") }
            var encrypted = name
            if NameCodec.isLongName(name) {
                encrypted = try NameCodec.longName(ofEntry: name, sideFile: try io.readFile(name + NameCodec.longNameSuffix, in: handle, limit: 4096))
            }
            let plain = String(decoding: try volume.keys.names.decrypt(encrypted, directoryIV: iv), as: UTF8.self)
            path = parentPath.map { ($0 == "/" ? "" : $0) + "/" + plain }
            emit(.name, path: path, backingPath: backingPath)
        } catch {
            emit(.name, path: nil, backingPath: backingPath, problem: .damaged("name does not decrypt: \(error)"))
        }
        let node: BackingNode
        do {
            node = try tree.backingNode(name, in: directory.fd).node
        } catch {
            emit(.name, path: path, backingPath: backingPath, problem: .damaged("cannot be opened: \(error)"))
            return
        }
        switch node.fileType {
        case S_IFDIR:
            scanXattrs(node, path: path, backingPath: backingPath)
            scanDirectory(node, path: path, backingPath: backingPath)
        case S_IFREG:
            // Hard links share one object: its blocks and xattrs are checked once.
            guard scannedFiles.insert(node.identity).inserted else { return }
            scanXattrs(node, path: path, backingPath: backingPath)
            scanBlocks(node, path: path, backingPath: backingPath)
        case S_IFLNK:
            scanSymlink(node, path: path, backingPath: backingPath)
        default:
            break // fifos, sockets and devices hold nothing sealed
        }
    }

    // MARK: Content

    private mutating func scanBlocks(_ node: BackingNode, path: String?, backingPath: String) {
        let handle: FileDescriptor
        do {
            handle = try tree.open(node, flags: O_RDONLY, caller: 0)
        } catch {
            emit(.fileHeader, path: path, backingPath: backingPath, problem: .damaged("\(error)"))
            return
        }
        defer { tree.close(handle) }
        let storedSize = (try? io.size(handle)) ?? 0
        do {
            try node.content!.visitStoredBlocks(fd: handle, opening: opening) { block in
                emit(.block(block.index), path: path, backingPath: backingPath, object: node, keyID: block.keyID, problem: block.error.map(Self.problem))
                progress.bytesDone += block.length + Envelope.overhead
                if block.index % 256 == 255 { report(progress) }
            }
        } catch {
            emit(.fileHeader, path: path, backingPath: backingPath, problem: .damaged("\(error)"))
        }
        progress.bytesDone += min(storedSize, volume.contentLayout.dataOffset)
        report(progress)
    }

    private mutating func scanSymlink(_ node: BackingNode, path: String?, backingPath: String) {
        var keyID: Epoch?
        var problem: ScanItem.Problem?
        do {
            let (sealed, linkFile) = try tree.sealedTarget(node)
            if let linkFile { referencedLinkFiles.insert(linkFile) }
            keyID = SymlinkCodec.keyID(ofSealed: sealed)
            if opening { _ = try volume.symlinks.decrypt(sealed: sealed) }
        } catch let error as EnvelopeError {
            problem = Self.problem(error)
        } catch {
            problem = .damaged("\(error)")
        }
        emit(.symlinkTarget, path: path, backingPath: backingPath, object: node, keyID: keyID, problem: problem)
    }

    private mutating func scanXattrs(_ node: BackingNode, path: String?, backingPath: String) {
        let backingNames: [String]
        do {
            backingNames = try backingXattrNames(node)
        } catch {
            emit(.xattr(backingName: "", name: nil), path: path, backingPath: backingPath,
                 problem: .damaged("attributes cannot be listed: \(error)"))
            return
        }
        for backingName in backingNames where backingName.hasPrefix(XattrCodec.backingPrefix) {
            var name: String?
            var keyID: Epoch?
            var problem: ScanItem.Problem?
            do {
                name = try volume.xattrs.name(ofBacking: backingName)
                var sealed = [UInt8](repeating: 0, count: BackingTree.maxXattrValue + 64)
                let length = try sealed.withUnsafeMutableBytes { try io.getxattr(node.fd, name: backingName, into: $0) }
                sealed.removeLast(sealed.count - length)
                keyID = try? sealed.withUnsafeBytes { try Envelope.keyID(of: $0) }
                if opening { _ = try volume.xattrs.openValue(sealed, name: name!) }
            } catch let error as EnvelopeError {
                problem = Self.problem(error)
            } catch {
                problem = .damaged("\(error)")
            }
            emit(.xattr(backingName: backingName, name: name), path: path, backingPath: backingPath, object: node, keyID: keyID,
                 problem: problem)
        }
        guard opening, tree.ivs.bindsAttributes, node.fileType == S_IFREG || node.fileType == S_IFDIR else { return }
        var problem: ScanItem.Problem?
        do {
            _ = try tree.checkedAttributes(node)
        } catch let error as ContentError where error == .attributes {
            problem = .damaged("\(error)")
        } catch DirectoryError.attributes {
            problem = .damaged("\(DirectoryError.attributes)")
        } catch {
            return // a record that does not read is an item of its own
        }
        emit(.attributeSet, path: path, backingPath: backingPath, object: node, problem: problem)
    }

    private func backingXattrNames(_ node: BackingNode) throws -> [String] {
        var raw = [UInt8](repeating: 0, count: BackingTree.maxXattrValue)
        let length = try raw.withUnsafeMutableBytes { try io.listxattr(node.fd, into: $0) }
        return raw.prefix(length).split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    // MARK: Side files

    /// Link files no symlink points to.
    private mutating func scanLinkFiles() throws {
        let links: [DirectoryEntry]
        do {
            links = try io.readdir(at: volume.backing + "/" + SymlinkCodec.sideDirectory)
        } catch let error as SystemError where error.errno == ENOENT {
            return
        }
        for link in links.sorted(by: { $0.name < $1.name }) {
            let orphaned = !referencedLinkFiles.contains(link.name)
            emit(.linkFile, path: nil, backingPath: SymlinkCodec.sidePrefix + link.name, problem: orphaned ? .orphaned : nil)
        }
    }

    // MARK: Helpers

    /// Stored bytes and blocks of the regular files of the tree under the directory open at
    /// `directory`, each hard-linked file once (`seen`): what the progress of a scan or a
    /// re-encryption counts up to.
    static func storedFiles(in directory: FileDescriptor, layout: ContentLayout, io: any BackingIO,
                            seen: inout Set<BackingNode.Identity>) throws -> (bytes: Int, blocks: Int) {
        try io.withOpened(".", in: directory, flags: O_RDONLY | O_DIRECTORY) { handle in
            var total = (bytes: 0, blocks: 0)
            for entry in try io.readdir(handle) where !NameCodec.isInternal(entry.name) {
                guard let info = try? io.fstatat(entry.name, in: handle) else { continue }
                switch info.st_mode & S_IFMT {
                case S_IFREG:
                    if seen.insert(BackingNode.Identity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))).inserted {
                        total.bytes += Int(info.st_size)
                        total.blocks += (layout.plaintextSize(backingSize: Int(info.st_size)) + layout.blockSize - 1) / layout.blockSize
                    }
                case S_IFDIR:
                    let child = try io.open(entry.name, in: handle, flags: epochfs_O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, mode: 0)
                    defer { io.close(child) }
                    if let below = try? storedFiles(in: child, layout: layout, io: io, seen: &seen) {
                        total.bytes += below.bytes
                        total.blocks += below.blocks
                    }
                default:
                    break
                }
            }
            return total
        }
    }

    /// An envelope that did not open, as a problem: a retired or unknown key id has its own.
    private static func problem(_ error: EnvelopeError) -> ScanItem.Problem {
        switch error {
        case let .retiredKey(epoch): .retiredKey(epoch)
        case let .unknownKeyID(epoch): .unknownKey(epoch)
        default: .damaged("\(error)")
        }
    }

    static func join(_ parent: String, _ name: String) -> String {
        parent == "." ? name : parent + "/" + name
    }
}

/// Why a scan item is damaged, where no lower layer's error says it.
struct ScanFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
