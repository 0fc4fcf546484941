import CFuse3
import EpochCheck
import EpochIO
import EpochStore
import EpochVolume
import Foundation
import Glibc
import Logging
import Synchronization

/// `MOUNT/.epochfs/control`, `status` and `metrics` (docs/MOUNTING.md, "The control file"): virtual files with fixed
/// node ids below any `BackingNode` address. One command per write to control; the write returns
/// only once the change is durable in the header. Status is JSON, metrics the Prometheus text
/// format, each snapshotted at open.
final class ControlFiles: Sendable {
    static let directoryName = Array(".epochfs".utf8)
    static let directoryID: UInt64 = 2
    static let controlID: UInt64 = 3
    static let statusID: UInt64 = 4
    static let metricsID: UInt64 = 5

    static func owns(_ node: UInt64) -> Bool { (directoryID...metricsID).contains(node) }

    private struct State {
        var lastError: String?
        /// Open status and metrics handles: fh → the snapshot taken at open.
        var snapshots: [UInt64: [UInt8]] = [:]
        var nextSnapshot: UInt64 = 1
    }

    private let tree: BackingTree
    /// The re-encryption `reencrypt start` runs while the mount serves.
    let reencryption: BackgroundReencryption
    /// Which transport serves the mount's requests, reported in status.
    let transport = TransportStatus()
    private var volume: LiveVolume { tree.volume }
    private let ownerUID: uid_t
    private let ownerGID: gid_t
    private let mountTime = timespec(tv_sec: time(nil), tv_nsec: 0)
    private let state = Mutex(State())
    private let logger = Logger(label: "epochfs.control")

    init(tree: BackingTree) {
        self.tree = tree
        reencryption = BackgroundReencryption(tree: tree)
        ownerUID = getuid()
        ownerGID = getgid()
    }

    var listing: [DirectoryListing.Entry] {
        [.init(name: Array(".".utf8), inode: Self.directoryID, type: UInt8(DT_DIR)),
         .init(name: Array("..".utf8), inode: UInt64(FUSE_ROOT_ID), type: UInt8(DT_DIR)),
         .init(name: Array("control".utf8), inode: Self.controlID, type: UInt8(DT_REG)),
         .init(name: Array("status".utf8), inode: Self.statusID, type: UInt8(DT_REG)),
         .init(name: Array("metrics".utf8), inode: Self.metricsID, type: UInt8(DT_REG))]
    }

    func isReserved(parent: UInt64, name: [UInt8]) -> Bool {
        parent == UInt64(FUSE_ROOT_ID) && name == Self.directoryName
    }

    func lookup(parent: UInt64, name: [UInt8]) -> fuse_entry_param? {
        let node: UInt64? = switch (parent, String(decoding: name, as: UTF8.self)) {
        case (UInt64(FUSE_ROOT_ID), ".epochfs"): Self.directoryID
        case (Self.directoryID, "control"): Self.controlID
        case (Self.directoryID, "status"): Self.statusID
        case (Self.directoryID, "metrics"): Self.metricsID
        default: nil
        }
        return node.map(entry)
    }

    func entry(_ node: UInt64) -> fuse_entry_param {
        var entry = fuse_entry_param()
        entry.ino = fuse_ino_t(node)
        entry.attr = attributes(node)
        return entry // zero timeouts: status changes on every read
    }

    func attributes(_ node: UInt64) -> stat {
        var info = stat()
        info.st_ino = ino_t(node)
        info.st_uid = ownerUID
        info.st_gid = ownerGID
        info.st_atim = mountTime
        info.st_mtim = mountTime
        info.st_ctim = mountTime
        switch node {
        case Self.directoryID:
            info.st_mode = S_IFDIR | 0o555
            info.st_nlink = 2
        case Self.controlID:
            info.st_mode = S_IFREG | 0o200
            info.st_nlink = 1
        default:
            info.st_mode = S_IFREG | 0o444
            info.st_nlink = 1
        }
        return info
    }

    /// Opens control (write only), status or metrics (read only, a fresh snapshot).
    func open(_ node: UInt64, file: UnsafeMutablePointer<fuse_file_info>, caller: uid_t) throws {
        let access = file.pointee.flags & O_ACCMODE
        file.pointee.direct_io = 1
        switch node {
        case Self.controlID:
            guard access == O_WRONLY else { throw SystemError("open", path: "control", errno: EACCES) }
            try authorize(caller)
            file.pointee.fh = 0
        case Self.statusID, Self.metricsID:
            guard access == O_RDONLY else { throw SystemError("open", path: node == Self.statusID ? "status" : "metrics", errno: EACCES) }
            let snapshot = node == Self.statusID ? Array((try statusJSON() + "\n").utf8)
                : volume.metricsText(reencryption: reencryption.status)
            file.pointee.fh = state.withLock { state in
                defer { state.nextSnapshot += 1 }
                state.snapshots[state.nextSnapshot] = snapshot
                return state.nextSnapshot
            }
        default:
            throw SystemError("open", path: ".epochfs", errno: EISDIR)
        }
    }

    func read(_ node: UInt64, file: UnsafeMutablePointer<fuse_file_info>, size: Int, offset: Int) throws -> [UInt8] {
        guard node == Self.statusID || node == Self.metricsID else { throw SystemError("read", path: ".epochfs", errno: node == Self.directoryID ? EISDIR : EBADF) }
        let snapshot = state.withLock { $0.snapshots[file.pointee.fh] } ?? []
        guard offset < snapshot.count else { return [] }
        return Array(snapshot[offset..<min(snapshot.count, offset + size)])
    }

    func release(_ node: UInt64, file: UnsafeMutablePointer<fuse_file_info>) {
        _ = state.withLock { $0.snapshots.removeValue(forKey: file.pointee.fh) }
    }

    /// Runs one command. Errors come back as the errno `FailureKind` gives them: EINVAL bad
    /// command, EPERM not the mount owner or root, ESTALE epoch below current, EBUSY retire
    /// refused (still named, or active), ENOENT retire of an epoch not in the keyring, the
    /// backing file system's errno when the header could not be written (EROFS, EIO, ...), EIO
    /// for a key source failure.
    func write(_ node: UInt64, data: UnsafeRawBufferPointer, caller: uid_t) throws {
        guard node == Self.controlID else { throw SystemError("write", path: ".epochfs", errno: EBADF) }
        let text = String(decoding: data, as: UTF8.self)
        do {
            try authorize(caller)
            try execute(try ControlCommand.parse(text))
            state.withLock { $0.lastError = nil }
        } catch {
            let command = text.trimmingCharacters(in: .whitespacesAndNewlines)
            let failure = SystemError("control", path: command, errno: FailureKind.errno(for: error))
            let message = "\(command): \(error)"
            state.withLock { $0.lastError = message }
            logger.error("control command failed", metadata: ["error": "\(message)"])
            throw failure
        }
    }

    private func execute(_ command: ControlCommand) throws {
        switch command {
        case let .rekey(epoch): try volume.rekey(to: epoch)
        case let .raftCutover(index): try volume.setRaftCutover(index)
        case let .reencryptStart(rate): try reencryption.start(rate: rate ?? BackgroundReencryption.defaultRate)
        case .reencryptStop: reencryption.stop()
        case let .retire(epoch, walChecked):
            try Retirement.retire(epoch: epoch, in: tree, walReferences: walChecked ? { _ in EpochReferences() } : nil)
        }
    }

    private func authorize(_ caller: uid_t) throws {
        guard caller == 0 || caller == ownerUID else { throw ControlError.notOwner(caller) }
    }

    func statusJSON() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let status = volume.status(lastError: state.withLock { $0.lastError }, reencryption: reencryption.status, transport: transport.report)
        return String(decoding: try encoder.encode(status), as: UTF8.self)
    }
}
