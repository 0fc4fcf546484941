import EpochIO
import Glibc

/// The unmount's commit: every file and directory changed since its last commit is committed
/// once everything is durable, as an fsync of each would, so that a volume unmounted cleanly
/// holds a record of all of it (docs/FORMAT.md §6.2, §5.6), not only of what programs fsync'd.
extension BackingTree {
    /// Commits what changed since its last commit (`syncAll` must have returned), then makes
    /// the records durable. Returns how many files and directories it committed, and how many
    /// it could not (each one's error is its own; the others go on).
    public func commitUncommitted() throws -> (committed: Int, failed: Int) {
        var pending = volume.uncommitted.withLock { set in
            defer { set = [] }
            return set
        }
        guard !pending.isEmpty else { return (0, 0) }
        var counts = (committed: 0, failed: 0)
        commitChanged(under: root, &pending, &counts)
        try syncAll()
        return counts
    }

    /// Depth first, so that a directory's record binds what its files' commits made durable.
    private func commitChanged(under directory: BackingNode, _ pending: inout Set<BackingNode.Identity>,
                               _ counts: inout (committed: Int, failed: Int)) {
        let entries = (try? listQuietly(directory)) ?? []
        for entry in entries where !NameCodec.isInternal(entry.name) {
            guard !pending.isEmpty else { return }
            let identity = BackingNode.Identity(device: directory.identity.device, inode: entry.inode)
            let type = Int32(entry.type)
            guard type == DT_DIR || type == DT_UNKNOWN || pending.contains(identity),
                  let node = try? backingNode(entry.name, in: directory.fd).node else { continue }
            if node.fileType == S_IFDIR {
                commitChanged(under: node, &pending, &counts)
            } else if node.fileType == S_IFREG, let content = node.content, pending.remove(node.identity) != nil {
                count(&counts) {
                    let handle = try openQuietly(SystemIO.procPath(node.fd), in: .currentDirectory, flags: O_RDWR | O_CLOEXEC)
                    defer { io.close(handle) }
                    // An fsync finds nothing left to write either, and binds the attributes.
                    try content.sync(fd: handle, dataOnly: false)
                }
            }
        }
        if pending.remove(directory.identity) != nil {
            count(&counts) {
                let handle = try openDirectory(directory)
                defer { close(handle) }
                try commitDirectory(directory, through: handle)
            }
        }
    }

    private func count(_ counts: inout (committed: Int, failed: Int), _ commit: () throws -> Void) {
        do {
            try commit()
            counts.committed += 1
        } catch {
            counts.failed += 1
        }
    }
}

extension FileContent {
    /// Notes a change the next commit must cover; the first since a commit began tells the
    /// volume (one lock per file per commit interval: a write usually finds the flag set).
    func noteChanged() {
        guard layout.hasRecord, !changedSinceCommit.load(ordering: .relaxed) else { return }
        volume.uncommitted.withLock { set in
            if !changedSinceCommit.exchange(true, ordering: .relaxed) { set.insert(identity) }
        }
    }

    /// A commit begins: whether anything changed since the last one (then noted no more).
    func takeChanged() -> Bool {
        guard changedSinceCommit.load(ordering: .relaxed) else { return false }
        return volume.uncommitted.withLock { set in
            guard changedSinceCommit.exchange(false, ordering: .relaxed) else { return false }
            set.remove(identity)
            return true
        }
    }
}

extension LiveVolume {
    /// A directory's entries changed (a name added, or one replaced): its next commit, or the
    /// unmount's, records them. Only on volumes with directory records.
    func noteEntriesChanged(in directory: BackingNode) {
        guard directory.directory != nil else { return }
        _ = uncommitted.withLock { $0.insert(directory.identity) }
    }

    /// A directory's commit begins: what changed before it is its.
    func noteEntriesCommitting(in directory: BackingNode) {
        _ = uncommitted.withLock { $0.remove(directory.identity) }
    }
}
