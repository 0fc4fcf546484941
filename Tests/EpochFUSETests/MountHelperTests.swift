import Foundation
import Glibc
import Support
import Testing

/// `mount -t fuse.epochfs` and /etc/fstab through mount-helpers/mount.epochfs, and daemon mode.
@Suite(.serialized) struct MountHelperTests {
    static let helper = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("mount-helpers/mount.epochfs").path

    /// A volume created and left unmounted, for the helper to mount.
    func unmountedVolume() throws -> MountedVolume {
        let volume = try MountedVolume()
        volume.unmount()
        return volume
    }

    func waitUntilUnmounted(_ volume: MountedVolume) {
        for _ in 0..<250 where volume.isMounted { usleep(20_000) }
    }

    @Test func helperMountsADaemonWithOptions() throws {
        let volume = try unmountedVolume()
        defer {
            _ = try? run("/bin/fusermount3", ["-u", volume.mountpoint])
            volume.destroy()
        }
        let mounted = try run("/usr/bin/env", ["EPOCHFS_BIN=\(volume.binary)", Self.helper, volume.backing, volume.mountpoint,
                                               "-o", "keysource=file:\(volume.keys)/%d.key,ro,noauto,nofail"])
        #expect(mounted.status == 0, "\(mounted.stderr)")
        #expect(volume.isMounted, "the daemon did not stay mounted")
        #expect(open(volume.path("new"), O_WRONLY | O_CREAT, 0o644) == -1)
        #expect(errno == EROFS)
        #expect(try volume.status()["epoch"] as? Int == 1)
        #expect(try run("/bin/fusermount3", ["-u", volume.mountpoint]).status == 0)
        waitUntilUnmounted(volume)
        #expect(!volume.isMounted)
    }

    @Test func fstabLineThroughMount8() throws {
        let installed = "/sbin/mount.fuse.epochfs"
        var ours = false
        if access(installed, F_OK) != 0 {
            #expect(symlink(Self.helper, installed) == 0, "cannot install \(installed)")
            ours = true
        }
        defer { if ours { unlink(installed) } }
        let volume = try unmountedVolume()
        defer {
            _ = try? run("/bin/fusermount3", ["-u", volume.mountpoint])
            volume.destroy()
        }
        let fstab = volume.root + "/fstab"
        try "\(volume.backing) \(volume.mountpoint) fuse.epochfs keysource=file:\(volume.keys)/%d.key,nofail 0 0\n"
            .write(toFile: fstab, atomically: true, encoding: .utf8)
        let mounted = try run("/usr/bin/env", ["EPOCHFS_BIN=\(volume.binary)", "/bin/mount", "--fstab", fstab, volume.mountpoint])
        #expect(mounted.status == 0, "\(mounted.stderr)")
        try Data("via fstab".utf8).write(to: URL(fileURLWithPath: volume.path("f")))
        #expect(try String(contentsOfFile: volume.path("f"), encoding: .utf8) == "via fstab")
        #expect(try run("/bin/umount", [volume.mountpoint]).status == 0)
        waitUntilUnmounted(volume)
        #expect(!volume.isMounted)
    }

    /// As root the mount raises its readahead to 1 MiB (after the kernel's INIT reset it).
    @Test func readaheadIsRaised() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        _ = try FileManager.default.contentsOfDirectory(atPath: volume.mountpoint) // a request after INIT
        var info = stat()
        #expect(stat(volume.mountpoint, &info) == 0)
        let bdi = "/sys/class/bdi/\(info.st_dev >> 8 & 0xfff):\(info.st_dev & 0xff | (info.st_dev >> 12) & 0xfff00)/read_ahead_kb"
        #expect(try String(contentsOfFile: bdi, encoding: .utf8) == "1024\n")
    }

    /// SIGTERM to a foreground mount unmounts it after flushing; the data is there afterwards.
    @Test func sigtermUnmountsCleanly() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        try Data(repeating: 7, count: 100_000).write(to: URL(fileURLWithPath: volume.path("f")))
        let daemon = try #require(volume.daemonPID)
        kill(daemon, SIGTERM)
        waitUntilUnmounted(volume)
        #expect(!volume.isMounted)
        try volume.mount()
        #expect(FileManager.default.contents(atPath: volume.path("f")) == Data(repeating: 7, count: 100_000))
    }
}
