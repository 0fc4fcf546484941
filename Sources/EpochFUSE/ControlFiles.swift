import CFuse3
import CLinux
import EpochVolume
import Foundation
import Glibc
import Logging
import Synchronization

/// `MOUNT/.epochfs/control` and `MOUNT/.epochfs/status` (DESIGN §4): virtual files with fixed
/// node ids below any `Inode` address. One command per write to control; the write returns
/// only once the change is durable in the header. Status is JSON, snapshotted at open.
final class ControlFiles: Sendable {
    static let directoryName = ".epochfs"
    static let directoryID: UInt64 = 2
    static let controlID: UInt64 = 3
    static let statusID: UInt64 = 4

    static func owns(_ node: UInt64) -> Bool { (directoryID...statusID).contains(node) }

    private struct State {
        var header: VolumeHeader
        var lastError: String?
        /// Open status handles: fh → the JSON snapshot taken at open.
        var snapshots: [UInt64: [UInt8]] = [:]
        var nextSnapshot: UInt64 = 1
    }

    private let journal: HeaderJournal
    private let keys: VolumeKeys
    private let counters: VolumeCounters
    private let epochGate: ReadWriteLock
    private let ownerUID: uid_t
    private let ownerGID: gid_t
    private let mountTime = timespec(tv_sec: time(nil), tv_nsec: 0)
    private let state: Mutex<State>
    private let logger = Logger(label: "epochfs.control")

    init(journal: HeaderJournal, header: VolumeHeader, keys: VolumeKeys, counters: VolumeCounters, epochGate: ReadWriteLock) {
        self.journal = journal
        self.keys = keys
        self.counters = counters
        self.epochGate = epochGate
        ownerUID = getuid()
        ownerGID = getgid()
        state = Mutex(State(header: header))
    }

    var listing: [DirectoryListing.Entry] {
        [.init(name: Array(".".utf8), inode: Self.directoryID, type: UInt8(DT_DIR)),
         .init(name: Array("..".utf8), inode: UInt64(FUSE_ROOT_ID), type: UInt8(DT_DIR)),
         .init(name: Array("control".utf8), inode: Self.controlID, type: UInt8(DT_REG)),
         .init(name: Array("status".utf8), inode: Self.statusID, type: UInt8(DT_REG))]
    }

    func isReserved(parent: UInt64, name: String) -> Bool {
        parent == UInt64(FUSE_ROOT_ID) && name == Self.directoryName
    }

    func lookup(parent: UInt64, name: String) -> fuse_entry_param? {
        let node: UInt64? = switch (parent, name) {
        case (UInt64(FUSE_ROOT_ID), Self.directoryName): Self.directoryID
        case (Self.directoryID, "control"): Self.controlID
        case (Self.directoryID, "status"): Self.statusID
        default: nil
        }
        guard let node, let attributes = attributes(node) else { return nil }
        var entry = fuse_entry_param()
        entry.ino = fuse_ino_t(node)
        entry.attr = attributes
        return entry // zero timeouts: status changes on every read
    }

    func attributes(_ node: UInt64) -> stat? {
        guard Self.owns(node) else { return nil }
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

    /// Opens control (write only) or status (read only, a fresh snapshot). False when `node` is
    /// not a control file.
    func open(_ node: UInt64, file: UnsafeMutablePointer<fuse_file_info>, request: fuse_req_t) throws -> Bool {
        guard Self.owns(node) else { return false }
        let access = file.pointee.flags & O_ACCMODE
        file.pointee.direct_io = 1
        switch node {
        case Self.controlID:
            guard access == O_WRONLY else { throw SystemError("open", path: "control", errno: EACCES) }
            try authorize(request)
            file.pointee.fh = 0
        case Self.statusID:
            guard access == O_RDONLY else { throw SystemError("open", path: "status", errno: EACCES) }
            let snapshot = Array((try statusJSON() + "\n").utf8)
            file.pointee.fh = state.withLock { state in
                defer { state.nextSnapshot += 1 }
                state.snapshots[state.nextSnapshot] = snapshot
                return state.nextSnapshot
            }
        default:
            throw SystemError("open", path: Self.directoryName, errno: EISDIR)
        }
        return true
    }

    func read(_ node: UInt64, file: UnsafeMutablePointer<fuse_file_info>, size: Int, offset: Int) -> [UInt8]? {
        guard node == Self.statusID else { return nil }
        let snapshot = state.withLock { $0.snapshots[file.pointee.fh] } ?? []
        guard offset < snapshot.count else { return [] }
        return Array(snapshot[offset..<min(snapshot.count, offset + size)])
    }

    func release(_ node: UInt64, file: UnsafeMutablePointer<fuse_file_info>) -> Bool {
        guard Self.owns(node) else { return false }
        _ = state.withLock { $0.snapshots.removeValue(forKey: file.pointee.fh) }
        return true
    }

    /// Runs one command. Errors come back as errno: EINVAL bad command, EPERM not the mount
    /// owner or root, ESTALE epoch below current, EIO key source or header failure.
    func write(_ node: UInt64, data: UnsafeRawBufferPointer, request: fuse_req_t) throws -> Bool {
        guard node == Self.controlID else { return false }
        let text = String(decoding: data, as: UTF8.self)
        do {
            try authorize(request)
            try execute(try ControlCommand.parse(text))
            state.withLock { $0.lastError = nil }
        } catch {
            let command = text.trimmingCharacters(in: .whitespacesAndNewlines)
            let failure = SystemError("control", path: command, errno: errno(for: error))
            let message = "\(command): \(error)"
            state.withLock { $0.lastError = message }
            logger.error("control command failed", metadata: ["error": "\(message)"])
            throw failure
        }
        return true
    }

    private func execute(_ command: ControlCommand) throws {
        switch command {
        case let .rekey(epoch):
            let result = try journal.rekey(to: epoch)
            // Writes hold the gate shared: once it is ours, none still seals with the old keys.
            epochGate.withWriteLock {
                keys.install(result.header.keyring)
                state.withLock { $0.header = result.header }
            }
        case let .raftCutover(index):
            let header = try journal.setRaftCutover(index)
            state.withLock { $0.header = header }
        }
    }

    private func authorize(_ request: fuse_req_t) throws {
        let caller = fuse_req_ctx(request)!.pointee.uid
        guard caller == 0 || caller == ownerUID else { throw ControlError.notOwner(caller) }
    }

    private func errno(for error: any Error) -> Int32 {
        switch error {
        case ControlError.notOwner: EPERM
        case is ControlError: EINVAL
        case JournalError.epochBelowCurrent: ESTALE
        case JournalError.reservedEpoch: EINVAL
        default: EIO
        }
    }

    func statusJSON() throws -> String {
        let snapshot = state.withLock { ($0.header, $0.lastError) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let status = VolumeStatus(snapshot.0, counters: counters, lastError: snapshot.1)
        return String(decoding: try encoder.encode(status), as: UTF8.self)
    }
}

/// A control file command: one per write.
enum ControlCommand: Equatable {
    case rekey(UInt32)
    case raftCutover(UInt64)

    static func parse(_ text: String) throws -> ControlCommand {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
        switch (words.first, words.count) {
        case ("rekey", 2):
            guard let epoch = UInt32(words[1]), epoch > 0 else { throw ControlError.badArgument(String(words[1])) }
            return .rekey(epoch)
        case ("raft-cutover", 2):
            guard let index = UInt64(words[1]) else { throw ControlError.badArgument(String(words[1])) }
            return .raftCutover(index)
        default:
            throw ControlError.unknownCommand(text.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }
}

enum ControlError: Error, CustomStringConvertible {
    case unknownCommand(String)
    case badArgument(String)
    case notOwner(uid_t)

    var description: String {
        switch self {
        case let .unknownCommand(text): "unknown command '\(text)' (expected 'rekey EPOCH' or 'raft-cutover INDEX')"
        case let .badArgument(word): "bad argument '\(word)'"
        case let .notOwner(uid): "caller uid \(uid) is neither the mount owner nor root"
        }
    }
}
