import EpochIO
import Glibc

/// The one process that may write a backing directory at a time: a mount daemon for its whole
/// life, or an offline command (rekey, header restore, fsck --repair, ...) while it runs.
///
/// Ownership is an exclusive `flock` on `BACKING/epochfs.owner`, so it is seen from every mount
/// namespace (mountinfo is not) and ends with the process, however it ends. The file also
/// names the holder (`docs/FORMAT.md` §1), so that a refusal can say which mount point to
/// unmount. The lock is held through a read-only descriptor: a mount keeps no backing file
/// open for writing, so the backing file system can still be remounted read-only under it.
public final class VolumeOwner: @unchecked Sendable {
    public static let fileName = "epochfs.owner"

    /// Who holds a volume, as the owner file says.
    public enum Holder: Equatable, Sendable, CustomStringConvertible {
        /// A daemon between taking the volume and its mount appearing.
        case mounting(pid: pid_t, mountpoint: String)
        case mount(pid: pid_t, mountpoint: String)
        case command(pid: pid_t, name: String)

        /// The file's text: the pid on the first line, then `mounting MOUNTPOINT`, `mount
        /// MOUNTPOINT` or `command NAME`, each line ending in a newline.
        var text: String {
            switch self {
            case let .mounting(pid, mountpoint): "\(pid)\nmounting \(mountpoint)\n"
            case let .mount(pid, mountpoint): "\(pid)\nmount \(mountpoint)\n"
            case let .command(pid, name): "\(pid)\ncommand \(name)\n"
            }
        }

        init?(text: String) {
            guard text.hasSuffix("\n"), let newline = text.firstIndex(of: "\n"), let pid = pid_t(String(text[..<newline])) else { return nil }
            let rest = text[text.index(after: newline)...].dropLast()
            if rest.hasPrefix("mounting ") {
                self = .mounting(pid: pid, mountpoint: String(rest.dropFirst("mounting ".count)))
            } else if rest.hasPrefix("mount ") {
                self = .mount(pid: pid, mountpoint: String(rest.dropFirst("mount ".count)))
            } else if rest.hasPrefix("command ") {
                self = .command(pid: pid, name: String(rest.dropFirst("command ".count)))
            } else {
                return nil
            }
        }

        public var description: String {
            switch self {
            case let .mounting(pid, mountpoint): "being mounted on \(mountpoint) (epochfs pid \(pid))"
            case let .mount(pid, mountpoint): "mounted on \(mountpoint) (epochfs pid \(pid))"
            case let .command(pid, name): "in use by epochfs \(name) (pid \(pid))"
            }
        }
    }

    public let backing: String
    private let io: any BackingIO
    /// nil only on a backing directory that is read-only and has no owner file: nothing can
    /// write it, so there is nothing to exclude.
    private let fd: FileDescriptor?

    /// Takes ownership of `backing` for `holder`, or throws `VolumeBusy` naming who has it.
    /// Creates the owner file when the volume has none yet (made by an older epochfs).
    public init(claiming backing: String, for holder: Holder, io: any BackingIO = SystemIO()) throws {
        self.backing = backing
        self.io = io
        let path = backing + "/" + Self.fileName
        var opened: FileDescriptor?
        do {
            opened = try io.open(path, in: .currentDirectory, flags: O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode: 0o600)
        } catch let error as SystemError where error.errno == EROFS {
            do {
                opened = try io.open(path, in: .currentDirectory, flags: O_RDONLY | O_CLOEXEC | O_NOFOLLOW, mode: 0)
            } catch let missing as SystemError where missing.errno == ENOENT {}
        }
        fd = opened
        guard let opened else { return }
        do {
            do {
                try io.flock(opened, operation: LOCK_EX | LOCK_NB)
            } catch let error as SystemError where error.errno == EWOULDBLOCK {
                let holder = Self.holder(of: backing, io: io)
                guard case let .mount(pid, mountpoint)? = holder, Self.hasUnmounted(pid: pid, mountpoint: mountpoint, holding: opened, io: io) else {
                    throw VolumeBusy(backing: backing, holder: holder)
                }
                // Unmounted, but its daemon is still making its last writes durable (umount
                // returns before the daemon sees it): a mount straight after an unmount waits
                // for that daemon to exit instead of being refused.
                try io.flock(opened, operation: LOCK_EX)
            }
        } catch {
            io.close(opened)
            throw error
        }
        record(holder)
    }

    deinit { if let fd { io.close(fd) } }

    /// Writes who holds the volume into the owner file (after a fork, the pid changes). Best
    /// effort: on a full or read-only disk the lock still holds, a refusal just cannot name
    /// the holder.
    public func record(_ holder: Holder) {
        guard fd != nil else { return }
        try? io.withOpened(backing + "/" + Self.fileName, in: .currentDirectory, flags: O_WRONLY | O_NOFOLLOW) { file in
            let bytes = Array(holder.text.utf8)
            try io.pwriteFully(file, bytes, at: 0)
            try io.ftruncate(file, size: bytes.count)
        }
    }

    /// Whether the daemon `pid` holds this owner file open while its mount on `mountpoint` is
    /// gone from its own mount namespace. Both are read from /proc/PID; where they cannot be
    /// read (another pid namespace), the answer is no and the volume stays refused.
    private static func hasUnmounted(pid: pid_t, mountpoint: String, holding owner: FileDescriptor, io: any BackingIO) -> Bool {
        guard let ownerFile = try? io.fstat(owner),
              let table = try? MountTable.read(of: "/proc/\(pid)/mountinfo"),
              let descriptors = try? io.readdir(at: "/proc/\(pid)/fd") else { return false }
        let holdsOwnerFile = descriptors.contains { entry in
            var file = stat() // through the descriptor's link, to the file it has open
            return stat("/proc/\(pid)/fd/" + entry.name, &file) == 0 && file.st_dev == ownerFile.st_dev && file.st_ino == ownerFile.st_ino
        }
        return holdsOwnerFile && !table.contains { $0.mountPoint == mountpoint }
    }

    /// Who the owner file names, if it names anyone in the expected form.
    public static func holder(of backing: String, io: any BackingIO = SystemIO()) -> Holder? {
        guard let bytes = try? io.readFile(backing + "/" + fileName, in: .currentDirectory, limit: 8192) else { return nil }
        return Holder(text: String(decoding: bytes, as: UTF8.self))
    }
}

/// Another process owns the volume: a mount (its mount point named) or an offline command.
public struct VolumeBusy: Error, CustomStringConvertible {
    public let backing: String
    public let holder: VolumeOwner.Holder?

    public var description: String {
        switch holder {
        case let .mount(_, mountpoint), let .mounting(_, mountpoint):
            "\(backing) is \(holder!): unmount it first (fusermount3 -u \(mountpoint))"
        case let .command(_, name): "\(backing) is \(holder!): wait for that \(name) to finish"
        case nil: "\(backing) is in use by another epochfs process: unmount it, or wait for that command to finish"
        }
    }
}
