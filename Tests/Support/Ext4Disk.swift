import Foundation
import Glibc

/// A directory a backing volume (or a reference tree) can live on.
public protocol BackingDisk: Sendable {
    var path: String { get }
}

extension SmallDisk: BackingDisk {}

/// A real ext4 file system with 4 KiB blocks and 256-byte inodes (mke2fs's defaults), on a
/// sparse image file mounted through a loop device (root only): the backing file system most users have, and the one the mount's
/// answers are compared with. Unmounted and removed when the value goes away.
public final class Ext4Disk: BackingDisk {
    public let path: String
    private let holder = TemporaryDirectory()

    public init(megabytes: Int = 256) throws {
        try requireTools([("/usr/sbin/mkfs.ext4", "e2fsprogs"), ("/usr/sbin/losetup", "mount")])
        let image = holder.path + "/ext4.img"
        path = holder.path + "/disk"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: image, contents: nil), truncate(image, off_t(megabytes) << 20) == 0 else { throw TestFailure("truncate \(image): errno \(errno)") }
        let made = try run("/usr/sbin/mkfs.ext4", ["-q", "-F", "-b", "4096", "-I", "256", image])
        guard made.status == 0 else { throw TestFailure("mkfs.ext4: \(made.stderr)") }
        let mounted = try run("/bin/mount", ["-t", "ext4", "-o", "loop", image, path])
        guard mounted.status == 0 else { throw TestFailure("mount ext4: \(mounted.stderr)") }
    }

    deinit { _ = try? run("/bin/umount", [path]) }
}
