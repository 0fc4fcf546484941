import CLinux
import EpochFormat
import EpochIO
import EpochStore
import Glibc

/// `fsck --repair` (docs/OPERATIONS.md, "fsck and --repair"): only what is safe, each step said in words.
///
/// - an item under an epoch the keyring lacks: left alone, and the header slots with it (a
///   header backup may still open it);
/// - a torn or damaged header slot: the current header committed again into it;
/// - blocks that do not open (damaged, moved, or of a retired epoch): the file's stored bytes
///   copied to `epochfs.lost/`, then those blocks rewritten as zeros in place, so every
///   readable byte stays where it was and the file reads through;
/// - a file whose header is damaged, a symlink whose target does not open: the backing object
///   moved to `epochfs.lost/` (nothing of it was readable);
/// - an xattr whose value does not open: the stored value kept in `epochfs.lost/`, the
///   attribute removed; then (format 5) the object's attributes bound as they are now, as for
///   an attribute set its record does not bind (trusting what is found);
/// - orphaned long-name side files and link files: removed;
/// - an entry whose name does not decrypt: moved into the plaintext `/lost+found` as
///   `#<inode>`, where its content reads again (or into `epochfs.lost/` when that fails);
/// - a lost directory IV: a fresh one, once no name in the directory depends on it (after the
///   moves above), never otherwise;
/// - a directory record that does not match its directory (format 4), and the record of every
///   directory a step above moved an entry out of: re-anchored, trusting what the directory
///   holds now.
public final class VolumeRepair {
    /// The plaintext directory at the root that entries with unreadable names move into.
    static let lostAndFound = "lost+found"

    private let tree: BackingTree
    private var done: [String] = []
    private var left: [String] = []
    /// Backing paths of the directories whose records must be written again at the end.
    private var toReanchor: Set<String> = []

    private var io: any BackingIO { tree.volume.io }
    private var root: FileDescriptor { tree.root.fd }

    /// Repairs `problems` (a scan's, of `tree`); returns what it did and what it left, one line each.
    public static func run(_ problems: [ScanItem], in tree: BackingTree) -> (done: [String], left: [String]) {
        let repair = VolumeRepair(tree: tree)
        repair.repair(problems)
        do {
            try tree.syncAll()
        } catch {
            repair.left.append("sync of the backing file system failed: \(error)")
        }
        return (repair.done, repair.left)
    }

    private init(tree: BackingTree) { self.tree = tree }

    private func repair(_ problems: [ScanItem]) {
        // Items under an epoch the keyring lacks point at a header that lost a commit: a header
        // backup may still open them, so neither they nor the header are touched.
        let unknownEpochs = Set(problems.compactMap { if case let .unknownKey(epoch) = $0.problem { epoch } else { nil } })
        for item in problems {
            guard case .unknownKey = item.problem else { continue }
            left.append("\(item.location): \(item.kind.label): \(item.problem!): not repaired (restore a header backup that holds it)")
        }
        let problems = problems.filter { if case .unknownKey = $0.problem { false } else { true } }
        let slots = problems.filter { if case .headerSlot = $0.kind { true } else { false } }
        if !slots.isEmpty, !unknownEpochs.isEmpty {
            for slot in slots {
                left.append("\(slot.location): \(slot.kind.label): \(slot.problem!): not rewritten, it may hold the keys of epoch(s) "
                            + "\(unknownEpochs.sorted().map(String.init).joined(separator: ", "))")
            }
        } else if !slots.isEmpty {
            attempt("header") {
                let header = try tree.volume.journal.recommit()
                return "header: wrote the current header (sequence \(header.sequence)) over the damaged slot"
            }
        }
        // Content first, while every backing path is still where the scan saw it.
        var blocks: [String: [ScanItem]] = [:]
        for item in problems { if case .block = item.kind { blocks[item.backingPath, default: []].append(item) } }
        for (_, items) in blocks.sorted(by: { $0.key < $1.key }) { zeroBlocks(items) }
        for item in problems where item.kind == .fileHeader || item.kind == .symlinkTarget { keepInLost(item) }
        for item in problems {
            if case let .xattr(backingName, _) = item.kind { keepXattr(item, backingName: backingName) }
        }
        // After the removals above: the sets as they are now are the ones bound.
        let rebound = Set(problems.filter { if case .xattr = $0.kind { true } else { $0.kind == .attributeSet } }.map(\.backingPath))
        for path in rebound.sorted() { rebindAttributes(path) }
        for item in problems where item.kind == .longNameFile || item.kind == .linkFile {
            attempt(item.location) {
                try io.unlinkat(item.backingPath, in: root, removeDirectory: false)
                return "\(item.location): removed the orphaned \(item.kind.label)"
            }
        }
        // Deepest first, so that no move changes the backing path of one still to come.
        let names = problems.filter { $0.kind == .name }.sorted { depth($0.backingPath) > depth($1.backingPath) }
        for item in names { moveToLostAndFound(item) }
        for item in problems where item.kind == .directoryIV { recreateIV(item) }
        for item in problems where item.kind == .directoryRecord { toReanchor.insert(item.backingPath) }
        for path in toReanchor.sorted() { reanchor(path) }
    }

    private func reanchor(_ backingPath: String) {
        let location = backingPath == "." ? "/" : backingPath
        attempt(location) {
            guard tree.ivs.hasRecords, let node = try? tree.backingNode(backingPath, in: root).node, node.fileType == S_IFDIR else { return nil }
            let count = try tree.reanchor(node)
            return "\(location): re-anchored the directory record to the \(count) entr\(count == 1 ? "y" : "ies") the directory holds now "
                + "(trusting them as found)"
        }
    }

    /// The backing path of the directory holding `backingPath`.
    private func parent(of backingPath: String) -> String {
        guard let slash = backingPath.lastIndex(of: "/") else { return "." }
        return String(backingPath[..<slash])
    }

    // MARK: Steps

    private func zeroBlocks(_ items: [ScanItem]) {
        let location = items[0].location
        attempt(location) {
            let kept = try keepCopy(of: items[0].backingPath)
            let node = try tree.backingNode(items[0].backingPath, in: root).node
            let handle = try tree.open(node, flags: O_RDWR, caller: 0)
            defer { tree.close(handle) }
            let size = Int(try tree.attributes(of: node).st_size)
            let blockSize = tree.volume.keys.blockSize
            var indices: [Int] = []
            for item in items {
                guard case let .block(index) = item.kind else { continue }
                let zeros = [UInt8](repeating: 0, count: min(blockSize, size - index * blockSize))
                _ = try zeros.withUnsafeBytes { try tree.write(node, through: handle, offset: index * blockSize, data: $0, caller: 0) }
                indices.append(index)
            }
            try io.fsync(handle)
            return "\(location): rewrote unreadable block(s) \(indices.map(String.init).joined(separator: ", ")) as zeros "
                + "(the stored file as it was is kept as \(kept))"
        }
    }

    /// Moves a backing object nothing of which is readable (and a symlink's link file with it)
    /// to `epochfs.lost/`.
    private func keepInLost(_ item: ScanItem) {
        attempt(item.location) {
            let linkFile = item.kind == .symlinkTarget
                ? (try? io.readlinkat(item.backingPath, in: root)).flatMap(SymlinkCodec.sideFileName) : nil
            let kept = try moveToLost(item.backingPath)
            toReanchor.insert(parent(of: item.backingPath))
            if let linkFile { _ = try? moveToLost(SymlinkCodec.sidePrefix + linkFile) }
            return "\(item.location): \(item.kind.label) unreadable: moved the \(item.kind == .symlinkTarget ? "symlink" : "file") to \(kept)"
        }
    }

    private func rebindAttributes(_ backingPath: String) {
        attempt(backingPath == "." ? "/" : backingPath) {
            let node = try tree.backingNode(backingPath, in: root).node
            guard try tree.rebindAttributes(node) else { return nil }
            return "\(backingPath == "." ? "/" : backingPath): attribute set: bound the attributes it holds now (trusted as found)"
        }
    }

    private func keepXattr(_ item: ScanItem, backingName: String) {
        attempt(item.location) {
            let node = try tree.backingNode(item.backingPath, in: root).node
            var value = [UInt8](repeating: 0, count: BackingTree.maxXattrValue + 64)
            let length = try value.withUnsafeMutableBytes { try io.getxattr(node.fd, name: backingName, into: $0) }
            let kept = try keepBytes(Array(value.prefix(length)))
            try io.removexattr(node.fd, name: backingName)
            return "\(item.location): \(item.kind.label) unreadable: removed it (its stored value is kept as \(kept))"
        }
    }

    private func moveToLostAndFound(_ item: ScanItem) {
        attempt(item.location) {
            guard (try? io.fstatat(item.backingPath, in: root)) != nil else { return nil } // moved out already
            let sideFile = NameCodec.isLongName(lastComponent(item.backingPath)) ? item.backingPath + NameCodec.longNameSuffix : nil
            let moved: String
            do {
                moved = try moveIntoLostAndFound(item.backingPath)
            } catch {
                moved = try moveToLost(item.backingPath)
            }
            if let sideFile { try? io.unlinkat(sideFile, in: root, removeDirectory: false) }
            toReanchor.insert(parent(of: item.backingPath))
            return "\(item.location): name unreadable: moved the entry to \(moved)"
        }
    }

    private func recreateIV(_ item: ScanItem) {
        guard case .lostIV = item.problem else {
            left.append("\(item.location): \(item.problem!) (not repaired)")
            return
        }
        attempt(item.location) {
            let recreated = try io.withOpened(item.backingPath, in: root, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW) {
                try tree.ivs.recreateIfUnused(in: $0)
            }
            guard recreated else { throw ScanFailure("directory IV lost and names in the directory still depend on it") }
            return "\(item.location): wrote a fresh directory IV (no name in the directory depended on the lost one)"
        }
    }

    // MARK: Places

    /// Renames the entry at `backingPath` into `/lost+found` as `#<inode>`; its plaintext path there.
    private func moveIntoLostAndFound(_ backingPath: String) throws -> String {
        let lostAndFound: BackingNode
        do {
            lostAndFound = try tree.lookup(Array(Self.lostAndFound.utf8), in: tree.root).0
        } catch let error as SystemError where error.errno == ENOENT {
            lostAndFound = try tree.mkdir(Array(Self.lostAndFound.utf8), in: tree.root, mode: 0o700, owner: nil).0
        }
        let name = "#\(try io.fstatat(backingPath, in: root).st_ino)"
        let backing = try tree.volume.keys.names.encrypt(Array(name.utf8), directoryIV: try lostAndFound.directoryIV())
        try io.renameat(backingPath, in: root, to: backing.name, in: lostAndFound.fd, flags: epochfs_RENAME_NOREPLACE)
        return "/\(Self.lostAndFound)/\(name)"
    }

    /// Renames `backingPath` into `epochfs.lost/` under the next free number; that path.
    private func moveToLost(_ backingPath: String) throws -> String {
        try withNextLostName { try io.renameat(backingPath, in: root, to: $0, in: root, flags: epochfs_RENAME_NOREPLACE) }
    }

    /// A byte copy of the backing file at `backingPath` in `epochfs.lost/`; its path.
    private func keepCopy(of backingPath: String) throws -> String {
        try io.withOpened(backingPath, in: root, flags: O_RDONLY | O_NOFOLLOW) { source in
            try keepFile { target in
                let chunk = 1 << 20
                var offset = 0
                while true {
                    let bytes = try io.preadFully(source, count: chunk, at: offset)
                    try io.pwriteFully(target, bytes, at: offset)
                    offset += bytes.count
                    if bytes.count < chunk { return }
                }
            }
        }
    }

    private func keepBytes(_ bytes: [UInt8]) throws -> String {
        try keepFile { try io.pwriteFully($0, bytes, at: 0) }
    }

    /// A new file (0400) in `epochfs.lost/` that `write` fills, made durable; its path.
    private func keepFile(_ write: (FileDescriptor) throws -> Void) throws -> String {
        try withNextLostName { name in
            try io.withOpened(name, in: root, flags: O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode: 0o400) { file in
                try write(file)
                try io.fsync(file)
            }
        }
    }

    /// Runs `make` with `epochfs.lost/N`, N the lowest number not taken, until it does not
    /// fail with EEXIST; returns that path.
    private func withNextLostName(_ make: (String) throws -> Void) throws -> String {
        do {
            try io.mkdirat(VolumeScan.lostDirectory, in: root, mode: 0o700)
        } catch let error as SystemError where error.errno == EEXIST {}
        var number = try io.readdir(at: tree.volume.backing + "/" + VolumeScan.lostDirectory).count + 1
        while true {
            let path = VolumeScan.lostDirectory + "/\(number)"
            do {
                try make(path)
                return path
            } catch let error as SystemError where error.errno == EEXIST {
                number += 1
            }
        }
    }

    // MARK: Helpers

    /// Runs one repair step: what it returns is done (nil: nothing needed), what it throws is left.
    private func attempt(_ location: String, _ step: () throws -> String?) {
        do {
            if let line = try step() { done.append(line) }
        } catch {
            left.append("\(location): not repaired: \(error)")
        }
    }

    private func depth(_ backingPath: String) -> Int { backingPath.split(separator: "/").count }

    private func lastComponent(_ backingPath: String) -> String { String(backingPath.split(separator: "/").last ?? "") }
}
