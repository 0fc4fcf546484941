import EpochFormat
import EpochIO
import Glibc

/// The machine's copy of a volume's anchor sequence (docs/FORMAT.md §3.8): the file
/// `DIRECTORY/<volume id in hex>`, outside the backing dir, where whoever can write the backing
/// dir cannot reach. Its text has a fixed length, so that each update is one in-place write of
/// a few bytes within one sector, made durable with fdatasync.
package struct LocalAnchor {
    /// `epochfs anchor\nvolume <32 hex digits>\nsequence <20 decimal digits>\n`.
    static func text(volumeID: VolumeID, sequence: UInt64) -> [UInt8] {
        let digits = String(sequence)
        return Array("epochfs anchor\nvolume \(volumeID.bytes.hexString)\nsequence \(String(repeating: "0", count: 20 - digits.count) + digits)\n".utf8)
    }

    static func path(in directory: String, volumeID: VolumeID) -> String { directory + "/" + volumeID.bytes.hexString }

    package let path: String
    private let io: any BackingIO
    private let volumeID: VolumeID
    private let fd: FileDescriptor

    /// Opens the machine's file for `volumeID` in `directory`; nil when there is none yet.
    package init?(directory: String, volumeID: VolumeID, io: any BackingIO) throws {
        path = Self.path(in: directory, volumeID: volumeID)
        self.io = io
        self.volumeID = volumeID
        do {
            fd = try io.open(path, in: .currentDirectory, flags: O_RDWR | O_CLOEXEC | O_NOFOLLOW, mode: 0)
        } catch let error as SystemError where error.errno == ENOENT {
            return nil
        }
    }

    /// Makes the machine's file for `volumeID` at `sequence`, durably (written aside, then
    /// renamed into place), making `directory` (mode 0700) when it is missing.
    static func create(directory: String, volumeID: VolumeID, sequence: UInt64, io: any BackingIO) throws -> LocalAnchor {
        do {
            try io.mkdirat(directory, in: .currentDirectory, mode: 0o700)
        } catch let error as SystemError where error.errno == EEXIST {}
        let path = Self.path(in: directory, volumeID: volumeID)
        try io.withOpened(directory, in: .currentDirectory, flags: O_RDONLY | O_DIRECTORY) { parent in
            let pending = volumeID.bytes.hexString + ".new"
            try io.withOpened(pending, in: parent, flags: O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode: 0o600) { file in
                try io.pwriteFully(file, text(volumeID: volumeID, sequence: sequence), at: 0)
                try io.fdatasync(file)
            }
            try io.renameat(pending, in: parent, to: volumeID.bytes.hexString, in: parent, flags: 0)
            try io.fsync(parent)
        }
        guard let made = try LocalAnchor(directory: directory, volumeID: volumeID, io: io) else {
            throw SystemError("open", path: path, errno: ENOENT)
        }
        return made
    }

    /// The sequence the file holds.
    package func read() throws -> UInt64 {
        let bytes = try io.preadFully(fd, count: 128, at: 0)
        let expected = Self.text(volumeID: volumeID, sequence: 0)
        let prefix = expected.count - 21 // up to the sequence's digits
        guard bytes.count == expected.count, Array(bytes.prefix(prefix)) == Array(expected.prefix(prefix)), bytes.last == 10,
              let sequence = UInt64(String(decoding: bytes[prefix..<(expected.count - 1)], as: UTF8.self)) else {
            throw AnchorError.damagedLocal(path: path)
        }
        return sequence
    }

    /// Replaces the sequence in place, durably.
    func write(_ sequence: UInt64) throws {
        try io.pwriteFully(fd, Self.text(volumeID: volumeID, sequence: sequence), at: 0)
        try io.fdatasync(fd)
    }

    package func close() { io.close(fd) }
}
