import Foundation
import Glibc
import Support
import Testing

/// One owner per volume: a mount holds the backing dir for its whole life, and every other
/// command that writes the backing dir (a second mount, header restore, offline rekey, ...) is
/// refused with exit 4 and the mount point named, from any mount namespace.
@Suite(.serialized) struct OwnershipTests {
    /// The issue's data loss: two mounts of one backing dir, records written through each in
    /// turn, read back with zero ranges. Now the second mount is refused and names the first.
    @Test func aSecondMountOfTheSameBackingIsRefusedNamingTheFirst() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let second = volume.root + "/mnt2"
        #expect(mkdir(second, 0o755) == 0)
        let child = try ChildProcess([volume.binary, "mount", volume.backing, second, "-f"],
                                     stdoutPath: "/dev/null", stderrPath: volume.root + "/mount2.log")
        // Either it gives up (refused) or its mount appears.
        _ = waitUntil(seconds: 15) { !child.isRunning || isMounted(second) }
        if isMounted(second) {
            defer {
                _ = try? run("/bin/fusermount3", ["-u", "-z", second])
                child.stop()
            }
            let lost = try recordsLost(writingAlternatelyThrough: volume.mountpoint, second)
            Issue.record("a second mount of \(volume.backing) was allowed; \(lost) of 300 records read back wrong")
            return
        }
        #expect(child.wait(seconds: 10) == 4)
        #expect(child.stderr.contains("is mounted on \(volume.mountpoint) (epochfs pid \(volume.daemonPID!))"), "\(child.stderr)")
        #expect(volume.isMounted)
    }

    /// Header restore, offline rekey, retire, reencrypt, fsck --repair and init all refuse a
    /// mounted volume naming its mount point; read-only commands still run. What is written
    /// through the mount afterwards reads back after a remount.
    @Test func offlineWritersAreRefusedWhileMounted() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let backup = volume.root + "/header.backup"
        #expect(try volume.epochfs("header", "backup", volume.backing, backup).status == 0)
        #expect(volume.control("rekey 2") == 0)
        let header = try Data(contentsOf: URL(fileURLWithPath: volume.backing + "/epochfs.header"))
        for command in [["header", "restore", volume.backing, backup, "--yes"], ["rekey", volume.backing, "3"],
                        ["retire", volume.backing, "1"], ["reencrypt", volume.backing], ["fsck", volume.backing, "--repair"],
                        ["init", volume.backing, "--key-source", "file:\(volume.keys)/%d.key"]] {
            let refused = try runBounded([volume.binary] + command, seconds: 60)
            #expect(refused.status == 4 && refused.stderr.contains("is mounted on \(volume.mountpoint)"),
                    "\(command.joined(separator: " ")): \(refused.output)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: volume.backing + "/epochfs.header")) == header, "the header is untouched")
        #expect(try volume.epochfs("info", volume.backing).status == 0, "info only reads")

        try Data("written after the refusals\n".utf8).write(to: URL(fileURLWithPath: volume.path("after")))
        volume.unmount()
        try volume.mount()
        #expect(try String(contentsOfFile: volume.path("after"), encoding: .utf8) == "written after the refusals\n")
        #expect(try volume.status()["epoch"] as? Int == 2)
    }

    /// A mount made in another mount namespace is invisible in this one's mountinfo; its lock
    /// on the backing dir is not.
    @Test func aMountInAnotherMountNamespaceIsStillSeen() throws {
        try requireTools([("/usr/bin/unshare", "util-linux")])
        let volume = try MountedVolume()
        defer { volume.destroy() }
        volume.unmount()
        let hidden = volume.root + "/hidden"
        #expect(mkdir(hidden, 0o755) == 0)
        let daemon = try ChildProcess(["/usr/bin/unshare", "-m", "--propagation", "private", volume.binary, "mount", volume.backing,
                                       hidden, "-f"], stdoutPath: "/dev/null", stderrPath: volume.root + "/hidden.log")
        defer { daemon.stop() } // SIGTERM: the daemon unmounts in its namespace, which then goes away
        // unshare execs the daemon, so its pid's mountinfo shows the mount.
        let appeared = waitUntil(seconds: 15) {
            let table = (try? String(contentsOfFile: "/proc/\(daemon.pid)/mountinfo", encoding: .utf8)) ?? ""
            return table.contains(" \(hidden) ") && daemon.isRunning
        }
        try #require(appeared, "the mount in the other namespace did not appear: \(daemon.stderr)")
        #expect(!isMounted(hidden), "not visible here")

        let mounted = try runBounded([volume.binary, "mount", volume.backing, volume.mountpoint], seconds: 30)
        if mounted.status == 0 { _ = try? run("/bin/fusermount3", ["-u", "-z", volume.mountpoint]) }
        #expect(mounted.status == 4 && mounted.stderr.contains("is mounted on \(hidden)"), "\(mounted.output)")
        let rekey = try volume.epochfs("rekey", volume.backing, "2")
        #expect(rekey.status == 4 && rekey.stderr.contains("is mounted on \(hidden)"), "\(rekey.output)")
    }

    /// A mount straight after an unmount (xfstests generic/130): `umount` returns before the old
    /// daemon has seen it, and that daemon holds the volume until it has made its last writes
    /// durable and exited. The old daemon is stopped while it is unmounted, so the new mount
    /// meets it for certain: it must wait (its flock blocked, as /proc/locks shows), not refuse,
    /// and mount once the old daemon ends.
    @Test func aMountStraightAfterAnUnmountWaitsForTheOldDaemon() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        try Data("written before the unmount\n".utf8).write(to: URL(fileURLWithPath: volume.path("kept")))
        let old = try #require(volume.daemonPID)
        #expect(kill(old, SIGSTOP) == 0)
        var stopped = true
        defer { if stopped { kill(old, SIGCONT) } }
        #expect(try run("/bin/fusermount3", ["-u", "-z", volume.mountpoint]).status == 0)
        #expect(!volume.isMounted)

        let next = try ChildProcess([volume.binary, "mount", volume.backing, volume.mountpoint, "-f"],
                                    stdoutPath: "/dev/null", stderrPath: volume.root + "/next.log")
        defer {
            _ = try? run("/bin/fusermount3", ["-u", "-z", volume.mountpoint])
            next.stop()
        }
        _ = waitUntil(seconds: 30) { !next.isRunning || isWaitingForFlock(next.pid) }
        #expect(next.isRunning, "the mount gave up instead of waiting: \(next.stderr)")
        #expect(!isMounted(volume.mountpoint), "mounted while the old daemon still holds the volume")

        #expect(kill(old, SIGCONT) == 0)
        stopped = false
        #expect(volume.awaitDaemonExit(), "the old daemon exits once it runs again")
        #expect(waitUntil(seconds: 30) { isMounted(volume.mountpoint) || !next.isRunning }, "\(next.stderr)")
        #expect(isMounted(volume.mountpoint), "\(next.stderr)")
        #expect(try String(contentsOfFile: volume.path("kept"), encoding: .utf8) == "written before the unmount\n")
    }
}

/// Whether `pid` waits for a `flock`: /proc/locks lists a blocked request as `N: -> FLOCK ...
/// PID ...`.
private func isWaitingForFlock(_ pid: pid_t) -> Bool {
    let locks = (try? String(contentsOfFile: "/proc/locks", encoding: .utf8)) ?? ""
    return locks.split(separator: "\n").contains { line in
        let fields = line.split(separator: " ")
        return fields.count > 5 && fields[1] == "->" && fields[2] == "FLOCK" && fields[5] == "\(pid)"
    }
}

func isMounted(_ mountpoint: String) -> Bool {
    let table = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
    return table.split(separator: "\n").contains { $0.split(separator: " ").dropFirst(4).first.map(String.init) == mountpoint }
}

/// 300 records of 100 bytes at fixed offsets of one file, each `pwrite` + `fsync` through the
/// two mounts in turn, then read back through the first after the caches are dropped: how many
/// differ from what was written.
private func recordsLost(writingAlternatelyThrough first: String, _ second: String) throws -> Int {
    let descriptors = [open(first + "/records", O_RDWR | O_CREAT, 0o644), open(second + "/records", O_RDWR)]
    defer { descriptors.forEach { close($0) } }
    guard descriptors.allSatisfy({ $0 >= 0 }) else { return 300 }
    func record(_ index: Int) -> [UInt8] { Array(String(format: "%099d\n", index).utf8) }
    for index in 0..<300 {
        let fd = descriptors[index % 2]
        _ = record(index).withUnsafeBytes { pwrite(fd, $0.baseAddress, 100, off_t(index * 100)) }
        fsync(fd)
    }
    sync()
    try Data("3\n".utf8).write(to: URL(fileURLWithPath: "/proc/sys/vm/drop_caches"))
    var buffer = [UInt8](repeating: 0, count: 100)
    return (0..<300).filter { index in
        pread(descriptors[0], &buffer, 100, off_t(index * 100)) != 100 || buffer != record(index)
    }.count
}
