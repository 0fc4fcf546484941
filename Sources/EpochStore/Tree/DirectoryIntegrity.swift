import EpochFormat
import EpochIO
import Glibc

/// Directory records (docs/FORMAT.md §5.6, format 4): each fsync of a directory commits what it
/// made durable; a name the record holds is let go, durably, before it is removed or replaced;
/// lookups and listings check what they find against it.
extension BackingTree {
    /// fsync of the directory `node` (open for reading at `handle`), then the commit of its
    /// record. The listing is taken first, then the side files and the directory are made
    /// durable, so that everything the record names is durable when it is written; the record
    /// itself is durable with the directory's next sync, as a file's is.
    func commitDirectory(_ node: BackingNode, through handle: FileDescriptor) throws {
        guard let commits = node.directory else {
            try syncSideFiles()
            try io.fsync(handle)
            return
        }
        try commits.holdingChanges {
            volume.noteEntriesCommitting(in: node)
            var committed = false
            defer { if !committed { volume.noteEntriesChanged(in: node) } }
            let (iv, old) = try commits.record(in: node.fd, ivs: ivs)
            let found = try snapshot(of: node, keeping: old)
            // The fsync makes the attributes read now durable too: the record binds them.
            let attributes = ivs.bindsAttributes ? try StoredAttributes(of: handle, io: io).digest : nil
            try syncSideFiles()
            try io.fsync(handle)
            commits.noteDurable(old.sequence) // in place through that fsync
            let record = DirectoryRecord(sequence: old.sequence + 1, entries: found,
                                         attributes: attributes.map { (old.attributes ?? .unbound).committing($0) })
            committed = record.entries == old.entries && record.attributes == old.attributes
            guard !committed else { return }
            try ivs.replaceRecord(record, iv: iv, in: node.fd)
            commits.adopt(record)
            committed = true
        }
    }

    /// Runs `body`, which removes or replaces the entries `names` (backing names, each in its
    /// directory, at most two directories), after each directory's record has let them go,
    /// durably: once the entry is gone, no power cut brings back a record that names it.
    func removing<R>(_ names: [(name: String, directory: BackingNode)], _ body: () throws -> R) throws -> R {
        var groups: [(directory: BackingNode, digests: [[UInt8]])] = []
        for (name, directory) in names where directory.directory != nil {
            let digest = DirectoryRecord.nameDigest(name)
            if let index = groups.firstIndex(where: { $0.directory.directory === directory.directory }) {
                groups[index].digests.append(digest)
            } else {
                groups.append((directory, [digest]))
            }
        }
        guard let first = groups.first?.directory.directory else { return try body() }
        return try first.holdingChanges(with: groups.last?.directory.directory) {
            for group in groups { try letGo(group.digests, in: group.directory) }
            return try body()
        }
    }

    private func letGo(_ digests: [[UInt8]], in directory: BackingNode) throws {
        guard let commits = directory.directory else { return }
        let (iv, record) = try commits.record(in: directory.fd, ivs: ivs)
        guard let next = record.removing(digests) else { return }
        try ivs.replaceRecord(next, iv: iv, in: directory.fd)
        commits.adopt(next)
    }

    /// `locate`, checked against the record of `directory`: a name the record holds must be
    /// there, as the object it named (EIO, `DirectoryError`, otherwise).
    func locateChecked(backingName: String, in directory: BackingNode) throws -> (BackingNode, stat) {
        guard let commits = directory.directory else { return try locate(backingName: backingName, in: directory) }
        // The namespace before the directory's changes, as removals take them.
        return try namespace.withReadLock {
            do {
                return try locateChecking(backingName, in: directory, commits)
            } catch is DirectoryError {
                // A removal or commit may have run between the record and the entry: look
                // again, with both held still.
                return try commits.holdingChanges { try locateChecking(backingName, in: directory, commits) }
            }
        }
    }

    private func locateChecking(_ backingName: String, in directory: BackingNode, _ commits: DirectoryCommits) throws -> (BackingNode, stat) {
        let record = try commits.record(in: directory.fd, ivs: ivs).record
        guard !record.entries.isEmpty else { return try locateLocked(backingName: backingName, in: directory) }
        let digest = DirectoryRecord.nameDigest(backingName)
        let found: (node: BackingNode, info: stat)
        do {
            found = try locateLocked(backingName: backingName, in: directory)
        } catch let error as SystemError where error.errno == ENOENT {
            if record.entry(digest) != nil { throw DirectoryError.missingEntry }
            throw error
        }
        guard let committed = record.entry(digest), !commits.wasVerified(digest, as: found.node.identity) else { return found }
        if let problem = mismatch(committed, found.node, found.info) { throw problem }
        commits.noteVerified(digest, as: found.node.identity)
        return found
    }

    /// The backing entries of `directory` read through `handle` (epochfs's own left out),
    /// after checking that every name its record holds is among them.
    func checkedEntries(of directory: BackingNode, through handle: FileDescriptor) throws -> [DirectoryEntry] {
        guard let commits = directory.directory else { return try io.readdir(handle).filter { !NameCodec.isInternal($0.name) } }
        return try commits.holdingChanges {
            let entries = try io.readdir(handle).filter { !NameCodec.isInternal($0.name) }
            let record: DirectoryRecord
            do {
                record = try commits.record(in: directory.fd, ivs: ivs).record
            } catch where entries.isEmpty {
                return entries // an IV lost in a power cut: empty, it lists as empty (§5.1)
            }
            guard !record.entries.isEmpty else { return entries }
            let present = Set(entries.map { DirectoryRecord.nameDigest($0.name) })
            guard record.entries.allSatisfy({ present.contains($0.nameDigest) }) else { throw DirectoryError.missingEntry }
            return entries
        }
    }

    /// What the record of `directory` holds that the directory does not (fsck), one finding
    /// each; throws when the record itself is damaged. Nothing on a volume without records.
    package func recordFindings(of directory: BackingNode) throws -> [String] {
        guard ivs.hasRecords else { return [] }
        let record = try ivs.readRecord(in: directory.fd).record
        let listed = try listQuietly(directory)
        var names: [[UInt8]: String] = [:]
        for raw in listed where !NameCodec.isInternal(raw.name) { names[DirectoryRecord.nameDigest(raw.name)] = raw.name }
        return record.entries.compactMap { committed in
            guard let name = names[committed.nameDigest] else {
                return "an entry the record holds (name digest \(committed.nameDigest.hexString)) is missing"
            }
            guard let found = try? backingNode(name, in: directory.fd) else { return "\(name) cannot be opened" }
            return mismatch(committed, found.node, found.info).map { "\(name): \($0)" }
        }
    }

    /// Rewrites the record of `directory` to what it holds now (fsck --repair after a
    /// deliberate restore or its own moves): it trusts the entries as found, ids read again.
    /// Returns how many entries the new record holds.
    package func reanchor(_ directory: BackingNode) throws -> Int {
        guard let commits = directory.directory else { return 0 }
        return try commits.holdingChanges {
            let iv = try ivs.read(in: directory.fd, requireRecord: false)
            let sequence = (try? ivs.readRecord(in: directory.fd).record.sequence) ?? 0
            let found = try snapshot(of: directory, keeping: DirectoryRecord())
            try syncSideFiles()
            let attributes = try io.withOpened(".", in: directory.fd, flags: O_RDONLY | O_DIRECTORY) { handle in
                let digest = ivs.bindsAttributes ? try StoredAttributes(of: handle, io: io).digest : nil
                try io.fsync(handle)
                return digest.map { AttributeBinding(committed: $0) }
            }
            let record = DirectoryRecord(sequence: sequence + 1, entries: found, attributes: attributes)
            try ivs.replaceRecord(record, iv: iv, in: directory.fd)
            commits.install(iv: iv, record: record)
            return found.count
        }
    }

    /// What the directory `node` holds now, as record entries; entries of `old` still there as
    /// the same type keep their ids (only this process removes or replaces a name it holds).
    private func snapshot(of node: BackingNode, keeping old: DirectoryRecord) throws -> [DirectoryRecord.Entry] {
        let listed = try listQuietly(node)
        return listed.filter { !NameCodec.isInternal($0.name) }.map { raw in
            let digest = DirectoryRecord.nameDigest(raw.name)
            var type = raw.type
            if Int32(type) == DT_UNKNOWN, let info = try? io.fstatat(raw.name, in: node.fd) { type = Self.directoryEntryType(info.st_mode) }
            if let kept = old.entry(digest), kept.type == type, kept.bindsObject {
                // A file or directory some node holds may have committed since: bind its newer
                // sequence (found by inode, with no call: a commit of a large directory stays a
                // listing).
                let identity = BackingNode.Identity(device: node.identity.device, inode: raw.inode)
                let bound: (id: [UInt8], sequence: UInt64)? = switch Int(type) {
                case Int(DT_REG): volume.liveContent(of: identity)?.durableRecordBound.map { ($0.fileID.bytes, $0.sequence) }
                case Int(DT_DIR): volume.liveDirectory(of: identity)?.durableBinding.map { ($0.iv, $0.sequence) }
                default: nil
                }
                guard let bound, bound.id == kept.objectID, bound.sequence > kept.sequence else { return kept }
                return DirectoryRecord.Entry(nameDigest: digest, type: type, objectID: kept.objectID, sequence: bound.sequence)
            }
            let bound = (try? backingNode(raw.name, in: node.fd)).flatMap { try? binding(of: $0.node) }
            return DirectoryRecord.Entry(nameDigest: digest, type: type, objectID: bound?.id ?? DirectoryRecord.unbound, sequence: bound?.sequence ?? 0)
        }
    }

    /// What a commit binds `node` by: a regular file's file id and a record sequence of it, once
    /// a sync of the file made them durable; a directory's IV, with a record sequence of it
    /// once a commit of it made one durable; a symlink's target id.
    private func binding(of node: BackingNode) throws -> (id: [UInt8], sequence: UInt64)? {
        if node.fileType == S_IFDIR, let bound = node.directory?.durableBinding, try objectID(of: node) == bound.iv {
            return (bound.iv, bound.sequence)
        }
        guard node.fileType == S_IFREG else { return try objectID(of: node).map { ($0, 0) } }
        guard let content = node.content else { return nil }
        _ = try recordIdentity(of: node, content)
        return content.durableRecordBound.map { ($0.fileID.bytes, $0.sequence) }
    }

    private func recordIdentity(of node: BackingNode, _ content: FileContent) throws -> (fileID: FileID, sequence: UInt64)? {
        let fd = try openQuietly(SystemIO.procPath(node.fd), in: .currentDirectory, flags: O_RDONLY | O_CLOEXEC)
        defer { io.close(fd) }
        return try content.recordIdentity(fd: fd)
    }

    /// The id `node` has now: a file's file id (nil without a record), a directory's IV, a
    /// symlink's target id; nil for other types.
    private func objectID(of node: BackingNode) throws -> [UInt8]? {
        switch node.fileType {
        case S_IFREG:
            guard let content = node.content else { return nil }
            return try recordIdentity(of: node, content)?.fileID.bytes
        case S_IFDIR:
            return try ivs.read(in: node.fd)
        case S_IFLNK:
            let sealed = try sealedTarget(node).sealed
            guard sealed.count >= FileID.byteCount else { throw SystemError("readlink", path: "", errno: EIO) }
            return Array(sealed.prefix(FileID.byteCount))
        default:
            return nil
        }
    }

    /// Why the object `node` (backing attributes `info`) is not what `committed` binds; nil
    /// when it is.
    private func mismatch(_ committed: DirectoryRecord.Entry, _ node: BackingNode, _ info: stat) -> DirectoryError? {
        let type = Self.directoryEntryType(info.st_mode)
        guard type == committed.type else { return .otherObject(expectedType: committed.type, foundType: type) }
        guard committed.bindsObject else { return nil }
        if node.fileType == S_IFREG, let content = node.content {
            let found = try? recordIdentity(of: node, content)
            guard let found = found ?? nil, found.fileID.bytes == committed.objectID else { return .otherObject(expectedType: type, foundType: type) }
            return found.sequence < committed.sequence ? .olderFile(found: found.sequence, committed: committed.sequence) : nil
        }
        guard (try? objectID(of: node)) == committed.objectID else { return .otherObject(expectedType: type, foundType: type) }
        // A directory bound with a record sequence: an older copy of it (IV file and entries)
        // put back has an older record.
        guard node.fileType == S_IFDIR, committed.sequence > 0, let commits = node.directory else { return nil }
        guard let found = try? commits.record(in: node.fd, ivs: ivs).record.sequence else { return .otherObject(expectedType: type, foundType: type) }
        return found < committed.sequence ? .olderDirectory(found: found, committed: committed.sequence) : nil
    }

    /// Every entry of `directory`, read without moving its access time (`openQuietly`).
    func listQuietly(_ directory: BackingNode) throws -> [DirectoryEntry] {
        let handle = try openQuietly(".", in: directory.fd, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { io.close(handle) }
        return try io.readdir(handle)
    }

    static func directoryEntryType(_ mode: mode_t) -> UInt8 {
        switch mode & S_IFMT {
        case S_IFREG: UInt8(DT_REG)
        case S_IFDIR: UInt8(DT_DIR)
        case S_IFLNK: UInt8(DT_LNK)
        case S_IFIFO: UInt8(DT_FIFO)
        case S_IFSOCK: UInt8(DT_SOCK)
        case S_IFCHR: UInt8(DT_CHR)
        case S_IFBLK: UInt8(DT_BLK)
        default: UInt8(DT_UNKNOWN)
        }
    }
}
