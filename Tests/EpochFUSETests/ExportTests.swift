import CLinux
import EpochStore
import EpochVolume
import Foundation
import Glibc
import Support
import Testing

/// `epochfs export`: offline, through the same tree the mount serves, the plaintext equals what
/// the mount showed; a block that does not authenticate stops it, or with --skip-bad becomes
/// zeros and is listed.
@Suite(.serialized) struct ExportTests {
    @Test func exportEqualsWhatTheMountShowsAndBadBlocksStopItOrAreSkipped() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let long = String(repeating: "x", count: 200)
        let big = (0..<70_000).map { _ in UInt8.random(in: 0...255) }
        #expect(mkdir(volume.path("d"), 0o750) == 0 && mkdir(volume.path("d/sub"), 0o700) == 0)
        try Data(big).write(to: URL(fileURLWithPath: volume.path("d/sub/" + long)))
        try Data((0..<10_000).map { UInt8(truncatingIfNeeded: $0) }).write(to: URL(fileURLWithPath: volume.path("d/a")))
        #expect(chmod(volume.path("d/a"), 0o640) == 0)
        _ = FileManager.default.createFile(atPath: volume.path("empty"), contents: Data())
        #expect(symlink("a", volume.path("d/link")) == 0)
        let shown = TreeSnapshot(volume.mountpoint)
        volume.unmount()

        let whole = volume.root + "/whole"
        let exported = try volume.epochfs("export", volume.backing, "/", whole)
        #expect(exported.status == 0, "\(exported.stderr)")
        #expect(exported.stdout.contains("exported 3 files, 3 directories, 1 symlinks, 80000 bytes"), "\(exported.stdout)")
        let copy = TreeSnapshot(whole)
        #expect(copy == shown, "differs:\n\(copy.difference(from: shown))")
        let one = volume.root + "/one"
        #expect(try volume.epochfs("export", volume.backing, "/d/sub/" + long, one).status == 0)
        let sameFile = FileManager.default.contents(atPath: one) == Data(big)
        #expect(sameFile)

        // Tamper with block 5 of the big file: export stops there, or skips it when told to.
        let backingFile = try #require(FileManager.default.enumerator(atPath: volume.backing)?.compactMap { $0 as? String }.first { name in
            !name.hasPrefix("epochfs.") && ((try? FileManager.default.attributesOfItem(atPath: volume.backing + "/" + name)[.size]) as? Int ?? 0) > 70_000
        })
        let fd = open(volume.backing + "/" + backingFile, O_RDWR)
        var byte: UInt8 = 0
        #expect(pread(fd, &byte, 1, dataOffset + 5 * 4130 + 100) == 1)
        byte ^= 1
        #expect(pwrite(fd, &byte, 1, dataOffset + 5 * 4130 + 100) == 1)
        close(fd)
        let stopped = try volume.epochfs("export", volume.backing, "/", volume.root + "/stopped")
        #expect(stopped.status == 1)
        #expect(stopped.stderr.contains("/d/sub/\(long): block 5"), "\(stopped.stderr)")
        let skipped = try volume.epochfs("export", volume.backing, "/", volume.root + "/skipped", "--skip-bad")
        #expect(skipped.status == 0, "\(skipped.stderr)")
        #expect(skipped.stdout.contains("skipped /d/sub/\(long) bytes 20480..<24576"), "\(skipped.stdout)")
        var expected = big
        expected.replaceSubrange(20480..<24576, with: repeatElement(0, count: 4096))
        let zeroed = FileManager.default.contents(atPath: volume.root + "/skipped/d/sub/" + long) == Data(expected)
        #expect(zeroed, "the bad block is zeros, every other byte as stored")
    }

    /// What `cp -a` keeps comes out: hard links, modes, owners, times, xattrs, fifos.
    @Test func exportKeepsHardLinksModesOwnersTimesAndXattrs() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        #expect(mkdir(volume.path("d"), 0o750) == 0)
        try Data("linked\n".utf8).write(to: URL(fileURLWithPath: volume.path("a")))
        #expect(link(volume.path("a"), volume.path("d/b")) == 0)
        #expect(chown(volume.path("a"), 1234, 5678) == 0 && chmod(volume.path("a"), 0o4751) == 0, "chmod after chown: it clears set-ID bits")
        #expect(epochfs_setxattr(volume.path("a"), "user.note", "kept", 4, 0) == 0)
        #expect(symlink("a", volume.path("s")) == 0 && lchown(volume.path("s"), 4321, 8765) == 0)
        #expect(mkfifo(volume.path("d/fifo"), 0o640) == 0)
        let past = [timespec(tv_sec: 1_000_000_000, tv_nsec: 123_456_789), timespec(tv_sec: 1_100_000_000, tv_nsec: 987_654_321)]
        for name in ["a", "s", "d/fifo", "d"] { #expect(utimensat(AT_FDCWD, volume.path(name), past, AT_SYMLINK_NOFOLLOW) == 0, "\(name)") }
        volume.unmount()

        let copy = volume.root + "/copy"
        let exported = try volume.epochfs("export", volume.backing, "/", copy)
        #expect(exported.status == 0 && exported.stdout.contains("1 more names as hard links"), "\(exported.output)")
        func info(_ name: String) -> stat {
            var result = stat()
            #expect(lstat(copy + "/" + name, &result) == 0, "\(name)")
            return result
        }
        let a = info("a"), b = info("d/b"), s = info("s"), fifo = info("d/fifo"), d = info("d")
        #expect(a.st_ino == b.st_ino && a.st_nlink == 2, "one file, two names")
        #expect(a.st_mode & 0o7777 == 0o4751 && a.st_uid == 1234 && a.st_gid == 5678)
        #expect(s.st_mode & S_IFMT == S_IFLNK && s.st_uid == 4321 && s.st_gid == 8765)
        #expect(fifo.st_mode & S_IFMT == S_IFIFO && fifo.st_mode & 0o7777 == 0o640)
        #expect(d.st_mode & 0o7777 == 0o750)
        // A symlink's atime is not compared: reading its sealed target (for its size) touches it.
        for (name, attributes) in [("a", a), ("s", s), ("d/fifo", fifo), ("d", d)] {
            #expect(attributes.st_mtim.tv_sec == past[1].tv_sec && attributes.st_mtim.tv_nsec == past[1].tv_nsec
                        && (name == "s" || attributes.st_atim.tv_sec == past[0].tv_sec && attributes.st_atim.tv_nsec == past[0].tv_nsec),
                    "\(name): the times \(attributes.st_atim) \(attributes.st_mtim)")
        }
        var value = [UInt8](repeating: 0, count: 16)
        let length = epochfs_getxattr(copy + "/a", "user.note", &value, 16)
        #expect(length == 4 && Array(value.prefix(4)) == Array("kept".utf8))
        #expect(try String(contentsOfFile: copy + "/d/b", encoding: .utf8) == "linked\n")
    }

    /// A volume of format 1 (made before the shadow slots): the mount refuses it and says what
    /// to do; export still reads it, as the message promises.
    @Test func formatOneVolumeIsExportedButNotMounted() throws {
        let directory = TemporaryDirectory()
        directory.write((0..<32).map { _ in UInt8.random(in: 0...255) }, to: "1.key")
        let backing = directory.path + "/backing", mountpoint = directory.path + "/mnt", binary = productPath("epochfs")
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        _ = try Volume.create(backing: backing, keySource: "file:\(directory.path)/%d.key", epoch: 1, blockSize: 4096, formatVersion: 1)
        let content = (0..<10_000).map { _ in UInt8.random(in: 0...255) }
        let tree = try BackingTree(volume: try LiveVolume(backing: backing))
        let (handle, file, _) = try tree.create(Array("old".utf8), in: tree.root, flags: O_RDWR | O_CREAT, mode: 0o644, owner: nil)
        try content.withUnsafeBytes { try tree.write(file, through: handle, offset: 0, data: $0, caller: 0) }
        tree.close(handle)
        // Format 1 stores the file header first and no slots.
        let stored = try #require(try FileManager.default.contentsOfDirectory(atPath: backing).first { !$0.hasPrefix("epochfs.") })
        #expect((try FileManager.default.attributesOfItem(atPath: backing + "/" + stored)[.size] as? Int) == 18 + 2 * 4130 + 1808 + 34)

        let mounted = try runBounded([binary, "mount", backing, mountpoint, "-f"], seconds: 30)
        if mounted.status == 0 || mounted.stderr.isEmpty { _ = try? runBounded(["/bin/fusermount3", "-u", mountpoint]) }
        #expect(mounted.status == 1)
        #expect(mounted.stderr.contains("format 1") && mounted.stderr.contains("epochfs export"), "\(mounted.stderr)")
        let exported = try runBounded([binary, "export", backing, "/", directory.path + "/out"])
        #expect(exported.status == 0, "\(exported.stderr)")
        #expect(FileManager.default.contents(atPath: directory.path + "/out/old") == Data(content))
    }
}
