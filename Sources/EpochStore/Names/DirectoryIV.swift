import EpochCrypto
import EpochFormat
import EpochIO
import Glibc

/// The per-directory file `epochfs.diriv` (docs/FORMAT.md §5.1, §5.6): 16 random bytes, the
/// associated data of every name in the directory, followed from format 4 on by the
/// directory's record (`DirectoryRecord`).
public struct DirectoryIV: Sendable {
    public static let fileName = "epochfs.diriv"
    /// Where a new record is written before a rename puts it in place of the old file.
    public static let pendingName = "epochfs.diriv.new"
    public static let size = 16

    let io: any BackingIO
    /// Authenticates directory records; nil on a volume older than format 4, whose IV files
    /// hold the IV alone.
    let recordKey: AESGCMKey?
    /// Format 5 on: records bind the directory's extended attributes (§5.5).
    public let bindsAttributes: Bool

    /// The IV files of a volume of format `formatVersion`, whose directory key is `directoryKey`.
    public init(io: any BackingIO, directoryKey: AESGCMKey, formatVersion: UInt16) {
        self.io = io
        recordKey = formatVersion >= DirectoryRecord.version ? directoryKey : nil
        bindsAttributes = formatVersion >= HeaderSlot.attributeBindingVersion
    }

    public var hasRecords: Bool { recordKey != nil }

    /// The record of a directory just made: no entry, and (format 5) no attribute, committed.
    var emptyRecord: DirectoryRecord {
        DirectoryRecord(attributes: bindsAttributes ? AttributeBinding(committed: AttributeBinding.digest(of: [])) : nil)
    }

    /// Reads the IV of the directory open at `directory`. On format 4 the file must be longer
    /// than the IV: a record cut off is as damaged as a short IV (unless `requireRecord` is
    /// false: a repair that writes a new one).
    public func read(in directory: FileDescriptor, requireRecord: Bool = true) throws -> [UInt8] {
        try io.withOpened(Self.fileName, in: directory, flags: O_RDONLY | O_NOFOLLOW) { fd in
            let length = Int(try io.fstat(fd).st_size)
            // Format 3 takes a record after the IV too (an upgrade to format 4 under way), and ignores it.
            let withRecord = length >= Self.size + DirectoryRecord.minSize
            guard withRecord || length == Self.size && !(hasRecords && requireRecord) else {
                throw SystemError("read", path: Self.fileName, errno: EIO)
            }
            let iv = try io.preadFully(fd, count: Self.size, at: 0)
            guard iv.count == Self.size else { throw SystemError("read", path: Self.fileName, errno: EIO) }
            return iv
        }
    }

    /// The IV and the record of the directory open at `directory` (format 4); a record that
    /// does not authenticate is an integrity error.
    public func readRecord(in directory: FileDescriptor) throws -> (iv: [UInt8], record: DirectoryRecord) {
        guard let recordKey else { throw SystemError("read", path: Self.fileName, errno: EINVAL) }
        // Read as long as it is: a limit would be allocated whole.
        let bytes = try io.withOpened(Self.fileName, in: directory, flags: O_RDONLY | O_NOFOLLOW) { fd in
            let length = Int(try io.fstat(fd).st_size)
            guard length <= Self.size + DirectoryRecord.maxSize else { throw SystemError("read", path: Self.fileName, errno: EFBIG) }
            return try io.preadFully(fd, count: length, at: 0)
        }
        guard bytes.count >= Self.size else { throw SystemError("read", path: Self.fileName, errno: EIO) }
        let iv = Array(bytes.prefix(Self.size))
        do {
            return (iv, try DirectoryRecord.decode(bytes.dropFirst(Self.size), key: recordKey, iv: iv))
        } catch {
            throw DirectoryError.record(error)
        }
    }

    /// What a directory's IV file holds: `iv`, and on format 4 `record` after it, in the
    /// layout of the volume's format (a record read from a format-4 layout binds nothing).
    func contents(iv: [UInt8], record: DirectoryRecord? = nil) throws -> [UInt8] {
        guard let recordKey else { return iv }
        var record = record ?? emptyRecord
        record.attributes = bindsAttributes ? record.attributes ?? .unbound : nil
        return iv + (try record.encoded(key: recordKey, iv: iv))
    }

    /// Writes `iv` (a fresh one, or the old one `restored` after a failed rmdir), with an empty
    /// record, into a new IV file of `directory`, and returns that file still open, for the
    /// caller to make durable. One write of at most 512 bytes: a power cut keeps all or none.
    /// A restored directory's record binds no attribute: it may hold some.
    public func write(_ iv: [UInt8], in directory: FileDescriptor, restored: Bool = false) throws -> FileDescriptor {
        let fd = try io.open(Self.fileName, in: directory, flags: O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode: 0o440)
        do {
            try io.pwriteFully(fd, try contents(iv: iv, record: restored ? DirectoryRecord() : nil), at: 0)
        } catch {
            io.close(fd)
            throw error
        }
        return fd
    }

    /// Puts `record` in place of the directory's record (the directory open for reading at
    /// `directory`): a new file, durable, renamed over the old one, so a power cut leaves one
    /// or the other whole. The rename is durable with the directory's next sync. The
    /// directory's access and modification times stay as they were: a commit (an fsync, or the
    /// unmount's) changes no entry the mount shows. (A create racing with a commit of the same
    /// directory may see its change of them undone; its entry is there all the same.)
    package func replaceRecord(_ record: DirectoryRecord, iv: [UInt8], in directory: FileDescriptor) throws {
        let times = try? io.fstat(directory)
        defer { if let times { try? io.utimensat(directory, access: times.st_atim, modification: times.st_mtim) } }
        do {
            try io.unlinkat(Self.pendingName, in: directory, removeDirectory: false)
        } catch let error as SystemError where error.errno == ENOENT {}
        let fd = try io.open(Self.pendingName, in: directory, flags: O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode: 0o440)
        var renamed = false
        defer {
            io.close(fd)
            if !renamed { try? io.unlinkat(Self.pendingName, in: directory, removeDirectory: false) }
        }
        try io.pwriteFully(fd, try contents(iv: iv, record: record), at: 0)
        if let old = try? io.fstatat(Self.fileName, in: directory), old.st_uid != getuid() || old.st_gid != getgid() {
            try? io.fchownat("", in: fd, owner: old.st_uid, group: old.st_gid) // whose the directory's IV file was
        }
        try io.fdatasync(fd)
        try io.renameat(Self.pendingName, in: directory, to: Self.fileName, in: directory, flags: 0)
        renamed = true
    }

    /// Gives the directory open (for reading) at `directory`, whose IV is missing or damaged,
    /// a fresh one, durably, provided no name in it depends on the IV: it holds nothing but
    /// epochfs's own files. Returns false, writing nothing, when it holds entries.
    public func recreateIfUnused(in directory: FileDescriptor) throws -> Bool {
        guard try io.readdir(directory).allSatisfy({ NameCodec.isInternal($0.name) }) else { return false }
        do {
            try io.unlinkat(Self.fileName, in: directory, removeDirectory: false)
        } catch let error as SystemError where error.errno == ENOENT {}
        try createDurably(in: directory)
        return true
    }

    /// Writes a fresh IV into `directory` (open for reading) and makes it durable at once, with
    /// its directory entry: for `init` and a root found without one.
    public func createDurably(in directory: FileDescriptor) throws {
        let fd = try write(try SecureRandom.bytes(Self.size), in: directory)
        defer { io.close(fd) }
        try io.fsync(fd)
        try io.fsync(directory)
    }

    /// Whether `name` is one of the files an empty directory may still hold (rmdir removes them).
    static func isOwnFile(_ name: String) -> Bool { name == fileName || name == pendingName }
}

/// A directory that does not hold what its last commit found durable (docs/FORMAT.md §5.6).
public enum DirectoryError: Error, CustomStringConvertible {
    case record(RecordError)
    /// A committed entry is gone from the directory.
    case missingEntry
    /// A committed entry names another object (another type or id) than the commit found.
    case otherObject(expectedType: UInt8, foundType: UInt8)
    /// A committed file is there with an older record than the commit found durable: an older
    /// copy of the whole file put back.
    case olderFile(found: UInt64, committed: UInt64)
    /// A committed directory is there with an older record than the commit found durable: an
    /// older copy of the whole directory put back.
    case olderDirectory(found: UInt64, committed: UInt64)
    /// Format 5: the directory's extended attributes are not a set its record binds (§5.5).
    case attributes

    public var description: String {
        switch self {
        case .attributes: "the directory's extended attributes are not the ones its record binds (changed, put back, copied or removed)"
        case let .record(error): "\(error)"
        case .missingEntry: "an entry the directory's last commit holds is missing from the backing directory"
        case let .olderFile(found, committed):
            "a file's record has sequence \(found), older than the \(committed) its directory's last commit found durable"
        case let .olderDirectory(found, committed):
            "a directory's record has sequence \(found), older than the \(committed) its parent's last commit found durable"
        case let .otherObject(expected, found):
            expected == found
                ? "an entry names another object than the directory's last commit found"
                : "an entry of type \(found) is where the directory's last commit found type \(expected)"
        }
    }
}
