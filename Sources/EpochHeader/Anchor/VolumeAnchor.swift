import EpochCrypto
import EpochFormat
import EpochIO
import Glibc

/// Where and how a mount anchors its volume (`-o anchor[=DIRECTORY]`, `-o accept_rollback`).
public struct AnchorOptions: Sendable {
    public static let defaultDirectory = "/var/lib/epochfs"
    public var directory: String
    /// Accept a backing dir older than the machine's anchor once (a deliberate restore): the
    /// anchor is set back to what the backing dir holds.
    public var acceptRollback: Bool

    public init(directory: String = AnchorOptions.defaultDirectory, acceptRollback: Bool = false) {
        self.directory = directory
        self.acceptRollback = acceptRollback
    }
}

/// A backing dir older than what this machine saw of it, or an anchor that cannot be read.
public enum AnchorError: Error, CustomStringConvertible {
    case rolledBack(found: UInt64?, anchored: UInt64, localPath: String)
    case damagedRecord(RecordError)
    case damagedLocal(path: String)

    public var description: String {
        switch self {
        case let .rolledBack(found, anchored, localPath):
            "the backing dir is older than this machine last saw it: "
                + (found.map { "its anchor sequence is \($0), " } ?? "its \(VolumeAnchor.fileName) is missing, ")
                + "\(localPath) holds \(anchored). An older copy of the volume was put back (a restored snapshot, "
                + "a sync service replaying an old version); what was written since is gone. If that copy was put "
                + "back on purpose, accept it once: mount with -o accept_rollback, or run `epochfs fsck BACKING "
                + "--anchor DIRECTORY --repair`"
        case let .damagedRecord(error): "\(VolumeAnchor.fileName): \(error)"
        case let .damagedLocal(path): "\(path) is not an anchor file epochfs wrote; remove it to anchor the volume as it is now"
        }
    }
}

/// A volume's anchor (docs/FORMAT.md §3.8): a sequence in the backing dir (`epochfs.anchor`)
/// and the machine's copy of it outside (`LocalAnchor`). Every fsync, fdatasync or fsyncdir
/// the mount acknowledges, and every header commit, ends with a round: the backing sequence
/// raised by one and made durable, then the machine's copy. Rounds are shared: a caller waits
/// for one that begins after its own sync returned, and one round serves every caller waiting
/// for it (group commit), so concurrent fsyncs do not queue behind each other.
///
/// The machine's copy is never ahead of the durable backing sequence, so no power cut leaves
/// a backing dir below it; a backing dir below it is an older copy put back.
public final class VolumeAnchor: @unchecked Sendable {
    public static let fileName = "epochfs.anchor"

    private let io: any BackingIO
    private let key: AESGCMKey
    private let volumeID: VolumeID
    private let record: FileDescriptor
    private let local: LocalAnchor
    /// What opening found and did that the log should say (first anchoring, accepted rollback).
    public let note: String?

    // The round state, under `mutex`.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let finishedRound = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var sequence: UInt64
    private var roundsStarted: UInt64 = 0
    private var lastSucceeded: UInt64 = 0
    private var lastFailure: (round: UInt64, error: any Error)?
    private var leading = false

    /// Opens the anchor of the volume in `backing`, checking the backing sequence against the
    /// machine's copy (throws `AnchorError.rolledBack` when it is lower, unless the options
    /// accept that once). The first anchoring trusts the backing dir as it is.
    package init(backing: String, volumeID: VolumeID, nameKey: SecretBytes, options: AnchorOptions, io: any BackingIO) throws {
        self.io = io
        self.volumeID = volumeID
        key = try AnchorRecord.key(nameKey: nameKey, volumeID: volumeID)
        let accepting = options.acceptRollback
        var recorded: UInt64?
        do {
            recorded = try Self.readRecord(backing: backing, volumeID: volumeID, key: key, io: io)
        } catch is AnchorError where accepting {} // a restore accepted: the record is written anew
        let existing = try LocalAnchor(directory: options.directory, volumeID: volumeID, io: io)
        var anchored: UInt64?
        do {
            anchored = try existing?.read()
        } catch is AnchorError where accepting { // and so is the machine's file
        } catch {
            existing?.close()
            throw error
        }
        let found = recorded ?? 0
        var note: String?
        if let known = anchored, found < known {
            guard accepting else {
                existing?.close()
                throw AnchorError.rolledBack(found: recorded, anchored: known, localPath: LocalAnchor.path(in: options.directory, volumeID: volumeID))
            }
            note = "accepted a backing dir older than this machine's anchor (sequence \(found), anchored \(known)), as -o accept_rollback asked"
            anchored = nil
        }
        do {
            record = try Self.openRecord(backing: backing, isNew: recorded == nil, io: io)
        } catch {
            existing?.close()
            throw error
        }
        do {
            if recorded == nil { try Self.write(found, to: record, key: key, volumeID: volumeID, io: io) }
            if let existing, anchored != nil {
                local = existing
            } else {
                note = note ?? "anchored at sequence \(found), trusting the backing dir as it is"
                if let existing {
                    try existing.write(found)
                    local = existing
                } else {
                    local = try LocalAnchor.create(directory: options.directory, volumeID: volumeID, sequence: found, io: io)
                }
            }
        } catch {
            io.close(record)
            existing?.close()
            throw error
        }
        sequence = max(found, anchored ?? 0)
        self.note = note
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(finishedRound, nil)
    }

    deinit {
        io.close(record)
        local.close()
        pthread_cond_destroy(finishedRound)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        finishedRound.deallocate()
    }

    /// Returns once a round that began after this call has made the anchor durable: what the
    /// caller made durable before calling is covered by the machine's copy.
    public func cover() throws {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        let needed = roundsStarted + 1
        while lastSucceeded < needed {
            if let failure = lastFailure, failure.round >= needed { throw failure.error }
            guard !leading else {
                pthread_cond_wait(finishedRound, mutex)
                continue
            }
            leading = true
            roundsStarted += 1
            let round = roundsStarted
            let next = sequence + 1
            pthread_mutex_unlock(mutex)
            let outcome = Result { try raise(to: next) }
            pthread_mutex_lock(mutex)
            leading = false
            sequence = next // tried: a later round goes above it whether or not this one failed
            switch outcome {
            case .success: lastSucceeded = round
            case let .failure(error): lastFailure = (round, error)
            }
            pthread_cond_broadcast(finishedRound)
        }
    }

    /// One round: the backing sequence, durable, then the machine's copy.
    private func raise(to next: UInt64) throws {
        try Self.write(next, to: record, key: key, volumeID: volumeID, io: io)
        try local.write(next)
    }

    private static func write(_ sequence: UInt64, to record: FileDescriptor, key: AESGCMKey, volumeID: VolumeID, io: any BackingIO) throws {
        try io.pwriteFully(record, try AnchorRecord(sequence: sequence).encoded(key: key, volumeID: volumeID), at: 0)
        try io.fdatasync(record)
    }

    /// The backing record open for writing; a new one's entry is made durable first.
    private static func openRecord(backing: String, isNew: Bool, io: any BackingIO) throws -> FileDescriptor {
        let fd = try io.open(backing + "/" + fileName, in: .currentDirectory, flags: O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode: 0o600)
        guard isNew else { return fd }
        do {
            try io.withOpened(backing, in: .currentDirectory, flags: O_RDONLY | O_DIRECTORY) { try io.fsync($0) }
        } catch {
            io.close(fd)
            throw error
        }
        return fd
    }

    /// The backing sequence: nil without a record, or with an empty one (made, and cut before
    /// its first write: no round was covered); `AnchorError.damagedRecord` when it does not
    /// authenticate.
    package static func readRecord(backing: String, volumeID: VolumeID, key: AESGCMKey, io: any BackingIO) throws -> UInt64? {
        let bytes: [UInt8]
        do {
            bytes = try io.readFile(backing + "/" + fileName, in: .currentDirectory, limit: 4096)
        } catch let error as SystemError where error.errno == ENOENT {
            return nil
        }
        guard !bytes.isEmpty else { return nil }
        do {
            return try AnchorRecord.decode(bytes, key: key, volumeID: volumeID).sequence
        } catch {
            throw AnchorError.damagedRecord(error)
        }
    }
}
