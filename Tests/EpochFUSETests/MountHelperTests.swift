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

    /// Installs the helper as /sbin/mount.fuse.epochfs unless one is there; returns whether
    /// it did (and the caller removes it).
    func installHelper() -> Bool {
        let installed = "/sbin/mount.fuse.epochfs"
        guard access(installed, F_OK) != 0 else { return false }
        #expect(symlink(Self.helper, installed) == 0, "cannot install \(installed)")
        return true
    }

    @Test func fstabLineThroughMount8() throws {
        let ours = installHelper()
        defer { if ours { unlink("/sbin/mount.fuse.epochfs") } }
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

    /// mount(8) passes neither `suid` nor `dev` to a helper (they are its defaults) and libfuse
    /// makes a mount nosuid,nodev unless told: the helper asks for both as root, so device
    /// nodes open and set-ID programs run as on ext4 (xfstests generic/184, 633), unless the
    /// line says `nosuid` or `nodev`.
    @Test func mount8GivesSuidAndDevUnlessTold() throws {
        let ours = installHelper()
        defer { if ours { unlink("/sbin/mount.fuse.epochfs") } }
        let volume = try unmountedVolume()
        defer {
            _ = try? run("/bin/fusermount3", ["-u", volume.mountpoint])
            volume.destroy()
        }
        let fstab = volume.root + "/fstab"
        func mount(_ options: String) throws -> [String] {
            try "\(volume.backing) \(volume.mountpoint) fuse.epochfs keysource=file:\(volume.keys)/%d.key\(options) 0 0\n"
                .write(toFile: fstab, atomically: true, encoding: .utf8)
            let mounted = try run("/usr/bin/env", ["EPOCHFS_BIN=\(volume.binary)", "/bin/mount", "--fstab", fstab, volume.mountpoint])
            #expect(mounted.status == 0, "\(mounted.stderr)")
            let table = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
            let line = table.split(separator: "\n").map { $0.split(separator: " ") }.first { $0.count > 5 && $0[4] == volume.mountpoint }
            return line.map { $0[5].split(separator: ",").map(String.init) } ?? []
        }

        let flags = try mount("")
        #expect(!flags.contains("nosuid") && !flags.contains("nodev"), "\(flags)")
        #expect(mknod(volume.path("null"), S_IFCHR | 0o666, dev_t(1 << 8 | 3) /* /dev/null */) == 0)
        let device = open(volume.path("null"), O_WRONLY)
        #expect(device >= 0, "errno \(errno)")
        #expect(write(device, "fred", 4) == 4)
        close(device)
        #expect(try run("/bin/umount", [volume.mountpoint]).status == 0)
        waitUntilUnmounted(volume)

        let told = try mount(",nosuid,nodev")
        #expect(told.contains("nosuid") && told.contains("nodev"), "\(told)")
        #expect(open(volume.path("null"), O_WRONLY) == -1)
        #expect(errno == EACCES)
        #expect(try run("/bin/umount", [volume.mountpoint]).status == 0)
        waitUntilUnmounted(volume)
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
