import Foundation
import Glibc
import Support
import Testing

/// `-o anchor`: a whole backing dir put back from before an fsync the mount acknowledged is
/// refused with a message that says what was found and how to accept it; fsck --anchor says
/// the same and --repair anchors again; a daemon killed under fsync'd writes leaves no alarm.
@Suite(.serialized) struct AnchorMountTests {
    @Test func anOlderCopyOfTheWholeBackingDirIsRefusedUntilAccepted() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        volume.unmount()
        let anchors = volume.root + "/anchors"
        try volume.mount(options: ["anchor=\(anchors)"])
        #expect(volume.mountLog.contains("anchored at sequence 0"), "\(volume.mountLog)")
        try writeDurably(volume.path("kept"), "written before the copy\n")
        // A consistent copy, as a snapshot or a sync service would keep it.
        let snapshot = volume.root + "/snapshot"
        #expect(try run("/bin/cp", ["-a", volume.backing, snapshot]).status == 0)
        try writeDurably(volume.path("kept"), "acknowledged after the copy\n")
        volume.unmount()

        try FileManager.default.removeItem(atPath: volume.backing)
        try FileManager.default.moveItem(atPath: snapshot, toPath: volume.backing)
        let refused = try volume.epochfs("mount", volume.backing, volume.mountpoint, "-o", "anchor=\(anchors)")
        if refused.status == 0 { _ = try? run("/bin/fusermount3", ["-u", "-z", volume.mountpoint]) }
        #expect(refused.status == 1 && refused.stderr.contains("older than this machine last saw it")
                    && refused.stderr.contains("accept_rollback"), "\(refused.output)")
        #expect(!volume.isMounted)
        let plain = try volume.epochfs("fsck", volume.backing)
        #expect(plain.status == 0, "without --anchor the copy is consistent in itself: \(plain.output)")
        let checked = try volume.epochfs("fsck", volume.backing, "--anchor", anchors)
        #expect(checked.status == 1 && checked.stdout.contains("anchor: the backing dir is older"), "\(checked.output)")

        // A deliberate restore, accepted once; later mounts need no flag.
        try volume.mount(options: ["anchor=\(anchors)", "accept_rollback"])
        #expect(volume.mountLog.contains("accepted a backing dir older"), "\(volume.mountLog)")
        #expect(try String(contentsOfFile: volume.path("kept"), encoding: .utf8) == "written before the copy\n")
        volume.unmount()
        try volume.mount(options: ["anchor=\(anchors)"])
        volume.unmount()
        #expect(try volume.epochfs("fsck", volume.backing, "--anchor", anchors).status == 0)
    }

    @Test func fsckRepairAnchorsAgain() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        volume.unmount()
        let anchors = volume.root + "/anchors"
        try volume.mount(options: ["anchor=\(anchors)"])
        try writeDurably(volume.path("a"), "one\n")
        volume.unmount()
        try FileManager.default.removeItem(atPath: volume.backing + "/epochfs.anchor")
        let repaired = try volume.epochfs("fsck", volume.backing, "--anchor", anchors, "--repair")
        #expect(repaired.status == 1 && repaired.stdout.contains("repaired: anchor: accepted"), "\(repaired.output)")
        #expect(try volume.epochfs("fsck", volume.backing, "--anchor", anchors).status == 0)
        try volume.mount(options: ["anchor=\(anchors)"])
        #expect(try String(contentsOfFile: volume.path("a"), encoding: .utf8) == "one\n")
    }

    /// kill -9 of the daemon between fsync'd writes: the next anchored mount opens with no
    /// alarm and reads what the fsyncs acknowledged.
    @Test func aKilledDaemonLeavesNoAlarm() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        volume.unmount()
        let anchors = volume.root + "/anchors"
        try volume.mount(options: ["anchor=\(anchors)"])
        for index in 0..<20 { try writeDurably(volume.path("f\(index % 3)"), "record \(index)\n") }
        #expect(kill(try #require(volume.daemonPID), SIGKILL) == 0)
        volume.unmount()
        try volume.mount(options: ["anchor=\(anchors)"])
        #expect(try String(contentsOfFile: volume.path("f1"), encoding: .utf8) == "record 19\n")
        #expect(try String(contentsOfFile: volume.path("f0"), encoding: .utf8) == "record 18\n")
    }
}

/// Replaces the file at `path` with `text` and fsyncs it.
private func writeDurably(_ path: String, _ text: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw TestFailure("open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    guard write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else { throw TestFailure("write \(path)") }
}
