import EpochFormat
import EpochHeader
import EpochIO
import EpochStore
import Glibc

/// `epochfs upgrade` (docs/FORMAT.md §3.1): a volume of format 3 or 4 becomes format 5,
/// offline and resumable. From format 3, every directory's IV file gets an empty record after
/// its IV (a new file renamed over the old, durable, so a crash leaves either). The header
/// commit that sets format 5 comes last, once all of them are durable. An interrupted run
/// leaves a format-3 volume (which reads IV files with or without a record) and the next run
/// picks up where it stopped. File content is the same in all three formats; the records of
/// files and directories bind their attributes from their next commit on (§5.5).
public enum FormatUpgrade {
    public struct Result: Sendable {
        public let directories: Int
        public let alreadyDone: Int
        public let header: VolumeHeader
    }

    public struct Refusal: Error, CustomStringConvertible {
        public let description: String
    }

    /// Upgrades the volume `volume` (opened offline by its owner) to the current format.
    public static func run(_ volume: LiveVolume) throws -> Result {
        let version = volume.header.slot.formatVersion
        guard version >= HeaderSlot.oldestMountedFormatVersion else { throw OlderFormatError(version: version) }
        guard version < HeaderSlot.formatVersion else {
            return Result(directories: 0, alreadyDone: 0, header: volume.header)
        }
        var upgraded = 0, alreadyDone = 0
        if version < DirectoryRecord.version {
            let ivs = DirectoryIV(io: volume.io, directoryKey: volume.keys.directoryKey, formatVersion: HeaderSlot.formatVersion)
            try volume.io.withOpened(volume.backing, in: .currentDirectory, flags: O_RDONLY | O_DIRECTORY) { root in
                try walk(root, path: "/", io: volume.io) { directory, path in
                    if (try? ivs.readRecord(in: directory)) != nil {
                        alreadyDone += 1
                        return
                    }
                    let iv: [UInt8]
                    do {
                        iv = try ivs.read(in: directory, requireRecord: false)
                    } catch {
                        throw Refusal(description: "\(path): the directory's IV cannot be read (\(error)); run `epochfs fsck --repair` first")
                    }
                    try ivs.replaceRecord(DirectoryRecord(), iv: iv, in: directory)
                    try volume.io.fsync(directory)
                    upgraded += 1
                }
            }
        }
        let header = try volume.journal.setFormatVersion(HeaderSlot.formatVersion)
        return Result(directories: upgraded, alreadyDone: alreadyDone, header: header)
    }

    /// Calls `visit` for the directory open at `directory` and every directory below it.
    private static func walk(_ directory: FileDescriptor, path: String, io: any BackingIO,
                             _ visit: (FileDescriptor, String) throws -> Void) throws {
        try visit(directory, path)
        for entry in try io.readdir(directory) where !NameCodec.isInternal(entry.name) {
            guard let info = try? io.fstatat(entry.name, in: directory), info.st_mode & S_IFMT == S_IFDIR else { continue }
            try io.withOpened(entry.name, in: directory, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW) {
                try walk($0, path: path + entry.name + "/", io: io, visit)
            }
        }
    }
}
