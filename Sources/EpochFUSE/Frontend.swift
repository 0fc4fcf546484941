import CFuse3
import CoreMetrics
import EpochIO
import EpochStore
import EpochSystem
import EpochVolume
import Glibc
import Logging
import Synchronization

/// The state every FUSE callback works on. libfuse calls on its own threads; everything here
/// is immutable or guarded (Mutex, atomics, locks), never actor-isolated.
final class Frontend: Sendable {
    /// How long the kernel keeps an entry or attributes without asking again: a day, as
    /// libfuse's passthrough_hp. Every change goes through this daemon and the kernel (one owner
    /// per volume), and the kernel drops what a change makes stale (link, unlink, rename,
    /// setattr, xattrs, writes); the rest of the backing dir's changes are seen only where the
    /// kernel does not keep them (docs/FORMAT.md §8.1).
    static let attributeTimeout = 86_400.0

    let volume: LiveVolume
    let tree: BackingTree
    let table: InodeTable
    let control: ControlFiles
    let readahead = Readahead()
    let metrics: RequestMetrics
    let logger = Logger(label: "epochfs.mount")
    /// Integrity log lines: a burst of 20, then 2 a second, so that a damaged file read in a
    /// loop cannot flood the journal; the next line says how many were left out.
    private let integrityLines = Mutex(TokenBucket(capacity: 20, perSecond: 2))

    init(volume: LiveVolume, keepingAccessTimes: Bool, requestMetrics: Bool = true) throws {
        self.volume = volume
        tree = try BackingTree(volume: volume, keepingAccessTimes: keepingAccessTimes)
        table = InodeTable(root: tree.root, ids: NodeIDs(probing: tree))
        control = ControlFiles(tree: tree)
        metrics = RequestMetrics(factory: requestMetrics ? volume.metrics.factory : NOOPMetricsHandler.instance)
    }

    /// What a node id the kernel sent stands for, resolved once per request.
    enum Node {
        case backing(BackingNode)
        case control(UInt64)
    }

    /// ESTALE for a node id the kernel has forgotten: it sends none but in a LOOKUP of "."
    /// or "..", which `dotEntry` answers.
    func resolve(_ nodeID: fuse_ino_t) throws -> Node {
        if ControlFiles.owns(UInt64(nodeID)) { return .control(UInt64(nodeID)) }
        guard let node = table.node(UInt64(nodeID)) else { throw SystemError("node", path: "", errno: ESTALE) }
        return .backing(node)
    }

    /// The backing node behind `nodeID`; a control node fails the operation with `errno`.
    func backing(_ nodeID: fuse_ino_t, orFail errno: Int32) throws -> BackingNode {
        guard case let .backing(node) = try resolve(nodeID) else { throw SystemError("node", path: "", errno: errno) }
        return node
    }

    /// The entry of "." or ".." in `nodeID`, which the kernel asks for (export support) to
    /// find a node it forgot again from a file handle, or a directory's parent: the node,
    /// reopened by its backing handle when the kernel forgot it, or its parent directory.
    func dotEntry(_ name: [UInt8], in nodeID: UInt64) throws -> fuse_entry_param {
        let wantsParent = name.count == 2
        if ControlFiles.owns(nodeID) {
            guard wantsParent else { return control.entry(nodeID) }
            return try entry((tree.root, try tree.attributes(of: tree.root)))
        }
        let found: (BackingNode, stat)
        if let node = table.node(nodeID) {
            found = (node, try tree.attributes(of: node))
        } else {
            guard table.ids.exportable, let handle = table.ids.handle(of: nodeID) else {
                throw SystemError("lookup", path: "", errno: ESTALE)
            }
            found = try tree.reopen(handle)
        }
        return try entry(wantsParent ? try tree.parent(of: found.0) : found)
    }

    /// The directory in which a new entry `name` is to be made: never the control directory,
    /// and `.epochfs` in the root is taken.
    func directoryForNewEntry(_ parent: fuse_ino_t, _ name: [UInt8]) throws -> BackingNode {
        let directory = try backing(parent, orFail: EPERM)
        if control.isReserved(parent: UInt64(parent), name: name) { throw SystemError("create", path: "", errno: EEXIST) }
        return directory
    }

    /// Registers a node found by the tree with the kernel and makes its entry reply.
    func entry(_ found: (BackingNode, stat)) throws -> fuse_entry_param {
        let (_, nodeID) = try table.remember(found.0, in: tree)
        var entry = fuse_entry_param()
        entry.ino = fuse_ino_t(nodeID)
        entry.attr = found.1
        entry.attr_timeout = Self.attributeTimeout
        entry.entry_timeout = Self.attributeTimeout
        return entry
    }

    /// The errno a failure becomes. Authentication failures and every other integrity problem
    /// are EIO, with a log line naming the file (`nodeID`'s plaintext path where it decrypts),
    /// the block and the reason, and for a directory's the entry asked for; never wrong data.
    func errno(for error: any Error, _ operation: String, nodeID: fuse_ino_t? = nil, entry: String? = nil) -> Int32 {
        switch error {
        case let error as SystemError:
            volume.counters.countFailure(error.errno)
            return error.errno
        case let error as ContentError:
            var metadata: Logger.Metadata = ["operation": "\(operation)"]
            if let nodeID, case let .backing(node) = try? resolve(nodeID) { metadata["path"] = "\(tree.plaintextPath(of: node))" }
            if let entry { metadata["entry"] = "\(entry)" } // of the directory at `path`
            switch error {
            case let .block(index, reason):
                metadata["block"] = "\(index)"
                metadata["reason"] = "\(reason)"
            case let .zeroedBlock(index), let .slotCopy(index):
                metadata["block"] = "\(index)"
                metadata["reason"] = "\(error)"
            case .badFileHeader, .record, .missingRecord, .olderRecord, .cut, .attributes:
                metadata["reason"] = "\(error)"
            }
            logIntegrity("integrity failure", metadata)
            volume.counters.countFailure(EIO)
            return EIO
        case let error as NameError:
            volume.counters.authenticationFailures.add(1, ordering: .relaxed)
            logIntegrity("bad name", ["operation": "\(operation)", "reason": "\(error)"])
            return EIO
        case let error as DirectoryError:
            var metadata: Logger.Metadata = ["operation": "\(operation)", "reason": "\(error)"]
            if let nodeID, case let .backing(node) = try? resolve(nodeID) { metadata["directory"] = "\(tree.plaintextPath(of: node))" }
            if let entry { metadata["entry"] = "\(entry)" }
            volume.counters.authenticationFailures.add(1, ordering: .relaxed)
            logIntegrity("directory integrity failure", metadata)
            volume.counters.countFailure(EIO)
            return EIO
        default:
            logIntegrity("failure", ["operation": "\(operation)", "reason": "\(error)"])
            return EIO
        }
    }

    private func logIntegrity(_ message: Logger.Message, _ metadata: Logger.Metadata) {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let (admitted, refused) = integrityLines.withLock { $0.admit(at: Double(now.tv_sec) + Double(now.tv_nsec) / 1e9) }
        guard admitted else { return }
        var metadata = metadata
        if refused > 0 { metadata["suppressed_before"] = "\(refused)" }
        logger.error(message, metadata: metadata)
    }
}

/// A libfuse request, unwrapped once: who asks, and the replies that take buffers.
struct Request {
    let raw: fuse_req_t

    /// The caller's uid and gid.
    var caller: (user: uid_t, group: gid_t) {
        let context = fuse_req_ctx(raw)!.pointee
        return (context.uid, context.gid)
    }

    /// The caller for the set-ID rules (`Caller`): in the request's group, or in one of their
    /// supplementary groups, looked up (libfuse reads /proc) only when a rule asks.
    var setIDCaller: Caller {
        let (user, group) = caller
        let raw = raw
        return Caller(user: user) { wanted in
            guard wanted != group else { return true }
            var groups = [gid_t](repeating: 0, count: 64)
            var count = Int(fuse_req_getgroups(raw, Int32(groups.count), &groups))
            if count > groups.count {
                groups = [gid_t](repeating: 0, count: count)
                count = Int(fuse_req_getgroups(raw, Int32(groups.count), &groups))
            }
            return count > 0 && groups.prefix(min(count, groups.count)).contains(wanted)
        }
    }

    /// As root with `allow_other`, what another user creates belongs to them in the backing
    /// dir; nil when the caller is the daemon's own user.
    var owner: BackingTree.Owner? {
        let (user, group) = caller
        guard geteuid() == 0, user != geteuid() || group != getegid() else { return nil }
        return BackingTree.Owner(user: user, group: group)
    }

    func reply(_ bytes: UnsafeRawBufferPointer) {
        fuse_reply_buf(raw, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
    }

    func reply(_ bytes: [UInt8]) { bytes.withUnsafeBytes { reply($0) } }

    func replyEntry(_ entry: fuse_entry_param) {
        var entry = entry
        fuse_reply_entry(raw, &entry)
    }

    func replyAttributes(_ attributes: stat) {
        var attributes = attributes
        fuse_reply_attr(raw, &attributes, Frontend.attributeTimeout)
    }

    func replyOK() { fuse_reply_err(raw, 0) }
}

/// A name libfuse passes, as bytes.
func nameBytes(_ name: UnsafePointer<CChar>?) -> [UInt8] {
    Array(UnsafeRawBufferPointer(start: name!, count: strlen(name!)))
}
