import EpochFormat
import EpochIO
import Glibc

/// Why a header restore was refused.
public enum HeaderRestoreError: Error, Equatable, Sendable, CustomStringConvertible {
    case notAHeaderBackup(String)
    case otherVolume(backup: String, volume: String)
    /// The backup is older than the header in place; restoring it undoes what is listed.
    case undoes(String)

    public var description: String {
        switch self {
        case let .notAHeaderBackup(reason): "not a header backup: \(reason)"
        case let .otherVolume(backup, volume): "the backup is of volume \(backup), the backing directory holds volume \(volume)"
        case let .undoes(what): "the backup is older than the header in place; restoring it undoes \(what) (give --yes to restore it anyway)"
        }
    }
}

/// `epochfs header backup` and `restore` (as `cryptsetup luksHeaderBackup`): the whole header
/// file, both slots, copied out and back. No key is needed: the slots are checked by their
/// checksums only, and what the backup opens with is whatever opened it when it was taken.
public enum HeaderBackup {
    /// The newest valid slot of a header image (both slots, `2 × HeaderSlot.size` bytes).
    static func newestSlot(of image: [UInt8]) throws -> HeaderSlot {
        guard image.count == 2 * HeaderSlot.size else {
            throw HeaderRestoreError.notAHeaderBackup("\(image.count) bytes, not \(2 * HeaderSlot.size)")
        }
        let slots = (0..<2).compactMap { try? HeaderSlot.decode(Array(image[($0 * HeaderSlot.size)..<(($0 + 1) * HeaderSlot.size)])) }
        guard let newest = slots.max(by: { $0.sequence < $1.sequence }) else {
            throw HeaderRestoreError.notAHeaderBackup("neither slot is a valid header slot")
        }
        return newest
    }

    /// Copies the header of the volume in `backing` to the new file `destination` (0600) and
    /// returns its newest slot.
    public static func backup(backing: String, to destination: String, io: any BackingIO = SystemIO()) throws -> HeaderSlot {
        let image = try io.readFile(backing + "/" + FileHeaderStore.fileName, in: .currentDirectory, limit: 2 * HeaderSlot.size)
        let slot = try newestSlot(of: image)
        try io.withOpened(destination, in: .currentDirectory, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600) { file in
            try io.pwriteFully(file, image, at: 0)
            try io.fsync(file)
        }
        return slot
    }

    /// Puts the header image in `source` back as the header of the volume in `backing`, by
    /// an atomic rename of a complete, fsync'd copy. Refused for a backup of another volume,
    /// and for one older than the header in place unless `undoing` (what it undoes is said).
    /// Returns the restored newest slot and the one it replaced (nil if none was valid).
    public static func restore(backing: String, from source: String, undoing: Bool,
                               io: any BackingIO = SystemIO()) throws -> (restored: HeaderSlot, replaced: HeaderSlot?) {
        let image = try io.readFile(source, in: .currentDirectory, limit: 2 * HeaderSlot.size)
        let restored = try newestSlot(of: image)
        let headerPath = backing + "/" + FileHeaderStore.fileName
        let replaced = try? newestSlot(of: (try? io.readFile(headerPath, in: .currentDirectory, limit: 2 * HeaderSlot.size)) ?? [])
        if let replaced {
            guard replaced.volumeID == restored.volumeID else {
                throw HeaderRestoreError.otherVolume(backup: restored.volumeID.description, volume: replaced.volumeID.description)
            }
            if replaced.sequence > restored.sequence, !undoing { throw HeaderRestoreError.undoes(undone(from: replaced, to: restored)) }
        }
        let staged = headerPath + ".restore"
        try? io.unlinkat(staged, in: .currentDirectory, removeDirectory: false)
        try io.withOpened(staged, in: .currentDirectory, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600) { file in
            try io.fallocate(file, mode: 0, offset: 0, length: image.count) // both slots allocated, as at init
            try io.pwriteFully(file, image, at: 0)
            try io.fsync(file)
        }
        try io.renameat(staged, in: .currentDirectory, to: headerPath, in: .currentDirectory, flags: 0)
        try io.withOpened(backing, in: .currentDirectory, flags: O_RDONLY | O_DIRECTORY) { try io.fsync($0) }
        return (restored, replaced)
    }

    /// What going back from `newer` to `older` undoes, in words.
    public static func undone(from newer: HeaderSlot, to older: HeaderSlot) -> String {
        var undone = ["\(newer.sequence - older.sequence) header commit(s) (sequence \(newer.sequence) back to \(older.sequence))"]
        if newer.epoch > older.epoch {
            undone.append("the rekey(s) from epoch \(older.epoch) to \(newer.epoch): whatever was written under epochs "
                          + "\(older.epoch.rawValue + 1)–\(newer.epoch) will not decrypt (EIO)")
        }
        if newer.raftCutover != older.raftCutover {
            undone.append("the raft cutover \(newer.raftCutover == .max ? "none" : String(newer.raftCutover)), back to "
                          + "\(older.raftCutover == .max ? "none" : String(older.raftCutover))")
        }
        return undone.joined(separator: "; ")
    }
}
