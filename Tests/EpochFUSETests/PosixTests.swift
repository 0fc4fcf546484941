import CLinux
import Foundation
import Glibc
import Support
import Testing

/// Each step runs once on the mount and once on a plain directory; outcomes (results and
/// errnos) and the trees afterwards must match.
struct Step: Sendable {
    let name: String
    let run: @Sendable (String) -> String
}

func fallocate(_ fd: Int32, _ mode: Int32, _ offset: Int, _ length: Int) -> Int32 {
    epochfs_fallocate(fd, mode, offset, length)
}

func outcome(_ result: Int32) -> String { result == 0 ? "ok" : "errno \(errno)" }
func outcome(_ result: Int) -> String { result >= 0 ? "ok \(result)" : "errno \(errno)" }

func readAll(_ path: String) -> String {
    guard let data = FileManager.default.contents(atPath: path) else { return "unreadable errno \(errno)" }
    return "\(data.count) bytes \(contentDigest(path))"
}

func writeFile(_ path: String, _ bytes: [UInt8], flags: Int32 = O_WRONLY | O_CREAT | O_TRUNC, at offset: Int? = nil) -> String {
    let fd = open(path, flags, 0o644)
    guard fd >= 0 else { return "open errno \(errno)" }
    defer { close(fd) }
    let written = bytes.withUnsafeBytes { raw in
        offset.map { pwrite(fd, raw.baseAddress, raw.count, off_t($0)) } ?? write(fd, raw.baseAddress, raw.count)
    }
    return outcome(written)
}

func statLine(_ path: String) -> String {
    var info = stat()
    guard lstat(path, &info) == 0 else { return "errno \(errno)" }
    return "mode \(String(info.st_mode, radix: 8)) size \(info.st_size) nlink \(info.st_nlink) uid \(info.st_uid) gid \(info.st_gid)"
}

let pattern = (0..<20_000).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 7) }

let posixSteps: [Step] = [
    Step(name: "create exclusive") { r in
        let first = open(r + "/f", O_CREAT | O_EXCL | O_WRONLY, 0o644)
        defer { if first >= 0 { close(first) } }
        let second = open(r + "/f", O_CREAT | O_EXCL | O_WRONLY, 0o644)
        return "\(first >= 0) \(second >= 0 ? "opened" : "errno \(errno)")"
    },
    Step(name: "write and hole") { r in
        writeFile(r + "/f", Array("hello".utf8), flags: O_WRONLY) + " " + writeFile(r + "/f", pattern, flags: O_WRONLY, at: 10_000)
            + " " + readAll(r + "/f") + " " + statLine(r + "/f")
    },
    Step(name: "read hole is zeros") { r in
        let fd = open(r + "/f", O_RDONLY)
        defer { close(fd) }
        var buffer = [UInt8](repeating: 1, count: 9000)
        let n = pread(fd, &buffer, 9000, 5)
        return "\(n) \(buffer.allSatisfy { $0 == 0 })"
    },
    Step(name: "append") { r in
        writeFile(r + "/f", Array("tail".utf8), flags: O_WRONLY | O_APPEND) + " " + writeFile(r + "/f", [1, 2, 3], flags: O_WRONLY | O_APPEND, at: 0)
            + " " + readAll(r + "/f")
    },
    Step(name: "truncate down and up") { r in
        outcome(truncate(r + "/f", 4099)) + readAll(r + "/f") + outcome(truncate(r + "/f", 12_345)) + readAll(r + "/f")
            + outcome(truncate(r + "/f", 8192)) + readAll(r + "/f") + outcome(truncate(r + "/f", 8193)) + readAll(r + "/f")
    },
    Step(name: "ftruncate on open fd, then write past the end") { r in
        let fd = open(r + "/f", O_RDWR)
        defer { close(fd) }
        let a = outcome(ftruncate(fd, 100))
        let b = pattern.withUnsafeBytes { outcome(pwrite(fd, $0.baseAddress, 3000, 7000)) }
        return a + b + readAll(r + "/f")
    },
    Step(name: "open O_TRUNC") { r in writeFile(r + "/t", pattern) + writeFile(r + "/t", [9], flags: O_WRONLY | O_TRUNC) + readAll(r + "/t") },
    Step(name: "chmod chown") { r in
        outcome(chmod(r + "/t", 0o640)) + outcome(chown(r + "/t", 1234, 5678)) + statLine(r + "/t")
            + outcome(chmod(r + "/t", 0o4755)) + statLine(r + "/t")
    },
    Step(name: "utimens") { r in
        var times = [timespec(tv_sec: 1_000_000, tv_nsec: 5), timespec(tv_sec: 2_000_000, tv_nsec: 7)]
        let set = outcome(utimensat(AT_FDCWD, r + "/t", &times, 0))
        var info = stat()
        stat(r + "/t", &info)
        let exact = "\(info.st_atim.tv_sec).\(info.st_atim.tv_nsec) \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
        times = [timespec(tv_sec: 0, tv_nsec: (1 << 30) - 2), timespec(tv_sec: 0, tv_nsec: (1 << 30) - 1)] // OMIT, NOW
        let partial = outcome(utimensat(AT_FDCWD, r + "/t", &times, 0))
        stat(r + "/t", &info)
        let now = time(nil)
        return set + exact + partial + " atime kept \(info.st_atim.tv_sec == 1_000_000) mtime now \(abs(info.st_mtim.tv_sec - now) < 10)"
    },
    Step(name: "mkdir rmdir") { r in
        outcome(mkdir(r + "/d", 0o750)) + outcome(mkdir(r + "/d", 0o750)) + writeFile(r + "/d/inner", [1])
            + outcome(rmdir(r + "/d")) + outcome(unlink(r + "/d/inner")) + outcome(rmdir(r + "/d")) + outcome(mkdir(r + "/d2", 0o700))
            + outcome(mkdir(r + "/d2/sub", 0o755)) + statLine(r + "/d2/sub") + outcome(rmdir(r + "/missing"))
    },
    Step(name: "unlink open file") { r in
        _ = writeFile(r + "/u", pattern)
        let fd = open(r + "/u", O_RDWR)
        defer { close(fd) }
        let removed = outcome(unlink(r + "/u"))
        let written = [7, 7, 7].withUnsafeBytes { outcome(pwrite(fd, $0.baseAddress, 3, 100)) }
        var buffer = [UInt8](repeating: 0, count: 200)
        let n = pread(fd, &buffer, 200, 0)
        return removed + written + "\(n) \(buffer[99...103])" + statLine(r + "/u")
    },
    Step(name: "rename open file, noreplace, exchange") { r in
        _ = writeFile(r + "/a", Array("AAAA".utf8))
        _ = writeFile(r + "/b", Array("BB".utf8))
        let fd = open(r + "/a", O_RDWR)
        defer { close(fd) }
        let moved = outcome(rename(r + "/a", r + "/d2/a2"))
        let written = [0x41].withUnsafeBytes { outcome(pwrite(fd, $0.baseAddress, 1, 4)) }
        let noReplace = outcome(epochfs_renameat2(AT_FDCWD, r + "/b", AT_FDCWD, r + "/d2/a2", epochfs_RENAME_NOREPLACE))
        let exchange = outcome(epochfs_renameat2(AT_FDCWD, r + "/b", AT_FDCWD, r + "/d2/a2", epochfs_RENAME_EXCHANGE))
        return moved + written + noReplace + exchange + readAll(r + "/b") + readAll(r + "/d2/a2")
            + outcome(rename(r + "/d2/a2", r + "/b")) + readAll(r + "/b") + statLine(r + "/d2/a2")
    },
    Step(name: "hard links") { r in
        outcome(link(r + "/b", r + "/d2/b-link")) + statLine(r + "/b") + writeFile(r + "/d2/b-link", [1, 2], flags: O_WRONLY | O_APPEND)
            + readAll(r + "/b") + outcome(unlink(r + "/b")) + statLine(r + "/d2/b-link") + outcome(link(r + "/d2", r + "/d3"))
    },
    Step(name: "symlinks up to 4095 bytes") { r in
        let short = outcome(symlink("d2/b-link", r + "/s1")) + readAll(r + "/s1")
        let target = String(repeating: "x/", count: 2047) + "y" // 4095 bytes
        let long = outcome(symlink(target, r + "/s2"))
        var buffer = [CChar](repeating: 0, count: 5000)
        let length = readlink(r + "/s2", &buffer, 5000)
        let roundTrip = String(decoding: buffer.prefix(max(0, length)).map { UInt8(bitPattern: $0) }, as: UTF8.self) == target
        let tooLong = outcome(symlink(target + "z", r + "/s3"))
        return short + long + " \(length) \(roundTrip) " + tooLong + statLine(r + "/s2") + outcome(link(r + "/s2", r + "/s2-hard"))
            + outcome(unlink(r + "/s2")) + " \(readlink(r + "/s2-hard", &buffer, 5000))"
    },
    Step(name: "mknod fifo and device") { r in
        outcome(mkfifo(r + "/fifo", 0o600)) + statLine(r + "/fifo") + outcome(mknod(r + "/null", S_IFCHR | 0o666, dev_t(1 << 8 | 3) /* makedev(1, 3): /dev/null */))
            + statLine(r + "/null")
    },
    Step(name: "fallocate") { r in
        _ = writeFile(r + "/fa", [1, 2, 3])
        let fd = open(r + "/fa", O_RDWR)
        defer { close(fd) }
        return outcome(fallocate(fd, 0, 0, 20_000)) + statLine(r + "/fa") + outcome(fallocate(fd, 1, 0, 90_000)) + statLine(r + "/fa")
            + readAll(r + "/fa")
    },
    Step(name: "fallocate punch hole and zero range") { r in
        _ = writeFile(r + "/holes", pattern)
        let fd = open(r + "/holes", O_RDWR)
        defer { close(fd) }
        // Edges inside blocks and whole blocks; a zero range past the end grows the file.
        return outcome(fallocate(fd, epochfs_FALLOC_FL_PUNCH_HOLE | epochfs_FALLOC_FL_KEEP_SIZE, 1000, 12_000)) + readAll(r + "/holes")
            + outcome(fallocate(fd, epochfs_FALLOC_FL_ZERO_RANGE, 15_000, 10_000)) + statLine(r + "/holes") + readAll(r + "/holes")
            + outcome(fallocate(fd, epochfs_FALLOC_FL_PUNCH_HOLE | epochfs_FALLOC_FL_KEEP_SIZE, 24_000, 5000)) + readAll(r + "/holes")
            + outcome(fallocate(fd, epochfs_FALLOC_FL_PUNCH_HOLE, 0, 10)) // PUNCH_HOLE needs KEEP_SIZE: EOPNOTSUPP
    },
    Step(name: "modes as asked, under umask 0, short and 255-byte names") { r in
        let saved = umask(0)
        defer { umask(saved) }
        let long = String(repeating: "m", count: 255)
        var result = ""
        for name in ["m642", long] {
            let fd = open(r + "/" + name, O_CREAT | O_WRONLY, 0o642)
            result += outcome(fd >= 0 ? 0 : -1) + statLine(r + "/" + name) + " "
            if fd >= 0 { close(fd) }
            result += outcome(mkdir(r + "/d" + name.prefix(250), 0o753)) + statLine(r + "/d" + name.prefix(250)) + " "
        }
        return result
    },
    Step(name: "rename a directory over an empty one, not over a full one") { r in
        mkdir(r + "/ra", 0o755)
        _ = writeFile(r + "/ra/inside", [1, 2, 3])
        mkdir(r + "/rb", 0o755)
        mkdir(r + "/rc", 0o755)
        _ = writeFile(r + "/rc/x", [4])
        return outcome(rename(r + "/ra", r + "/rb")) + readAll(r + "/rb/inside") + outcome(rename(r + "/rb", r + "/rc"))
            + outcome(rename(r + "/rc", r + "/rc")) + readAll(r + "/rc/x")
    },
    Step(name: "chown to -1 -1 touches only the ctime") { r in
        _ = writeFile(r + "/ct", [1])
        var before = stat(), after = stat()
        lstat(r + "/ct", &before)
        usleep(20_000)
        let result = outcome(chown(r + "/ct", uid_t.max, gid_t.max))
        lstat(r + "/ct", &after)
        return result + " ctime changed \(before.st_ctim.tv_sec != after.st_ctim.tv_sec || before.st_ctim.tv_nsec != after.st_ctim.tv_nsec)"
    },
    Step(name: "fsync fdatasync") { r in
        let fd = open(r + "/fa", O_RDWR)
        defer { close(fd) }
        return outcome(fsync(fd)) + outcome(fdatasync(fd))
    },
    Step(name: "mmap write and read, coherent with pwrite") { r in
        _ = writeFile(r + "/m", pattern)
        let fd = open(r + "/m", O_RDWR)
        defer { close(fd) }
        guard let map = mmap(nil, 20_000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), map != MAP_FAILED else { return "mmap errno \(errno)" }
        let bytes = map.assumingMemoryBound(to: UInt8.self)
        for index in stride(from: 0, to: 20_000, by: 997) { bytes[index] = 0xEE }
        let synced = outcome(msync(map, 20_000, MS_SYNC))
        let written = [0xAB, 0xCD].withUnsafeBytes { outcome(pwrite(fd, $0.baseAddress, 2, 5000)) }
        let coherent = bytes[5000] == 0xAB && bytes[5001] == 0xCD
        munmap(map, 20_000)
        return synced + written + " \(coherent) " + readAll(r + "/m")
    },
    Step(name: "long names") { r in
        let name = String(repeating: "n", count: 255)
        return writeFile(r + "/d2/" + name, [1, 2, 3]) + readAll(r + "/d2/" + name) + outcome(rename(r + "/d2/" + name, r + "/" + name))
            + readAll(r + "/" + name) + writeFile(r + "/" + name + "x", [1]) + outcome(mkdir(r + "/d2/" + String(repeating: "d", count: 200), 0o755))
    },
    Step(name: "extended attributes") { r in
        let set = outcome(epochfs_setxattr(r + "/fa", "user.color", "blue", 4, 0))
        let create = outcome(epochfs_setxattr(r + "/fa", "user.color", "red", 3, 1)) // XATTR_CREATE on existing
        var value = [CChar](repeating: 0, count: 64)
        let length = epochfs_getxattr(r + "/fa", "user.color", &value, 64)
        let sizeOnly = epochfs_getxattr(r + "/fa", "user.color", nil, 0)
        let small = outcome(epochfs_getxattr(r + "/fa", "user.color", &value, 2))
        let missing = outcome(epochfs_getxattr(r + "/fa", "user.none", &value, 64))
        let dir = outcome(epochfs_setxattr(r + "/d2", "user.k", "v", 1, 0))
        var list = [CChar](repeating: 0, count: 256)
        let listed = epochfs_listxattr(r + "/fa", &list, 256)
        let removed = outcome(epochfs_removexattr(r + "/fa", "user.color")) + outcome(epochfs_removexattr(r + "/fa", "user.color"))
        let text = { (chars: [CChar]) in String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return set + create + " \(length) \(text(value)) \(sizeOnly) " + small + missing + dir
            + " \(listed) \(text(list))" + removed
    },
    Step(name: "readdir") { r in
        ((try? FileManager.default.contentsOfDirectory(atPath: r)) ?? ["error"]).sorted().joined(separator: ",")
    },
    Step(name: "statfs") { r in
        var info = statvfs()
        return outcome(statvfs(r, &info)) + " namemax \(info.f_namemax) has blocks \(info.f_blocks > 0)"
    },
]

@Suite(.serialized) struct PosixTests {
    @Test func operationsMatchAPlainDirectory() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let plain = volume.root + "/plain"
        try FileManager.default.createDirectory(atPath: plain, withIntermediateDirectories: true)
        var root = stat()
        stat(volume.mountpoint, &root)
        chmod(plain, root.st_mode & 0o7777) // as the mount's root, the backing dir init made
        for step in posixSteps {
            let expected = step.run(plain)
            let actual = step.run(volume.mountpoint)
            #expect(actual == expected, "step '\(step.name)'")
        }
        let expectedTree = TreeSnapshot(plain), actualTree = TreeSnapshot(volume.mountpoint)
        #expect(actualTree == expectedTree, "trees differ:\n\(actualTree.difference(from: expectedTree))")
        // Everything survives an unmount and a fresh mount.
        volume.unmount()
        try volume.mount()
        let remounted = TreeSnapshot(volume.mountpoint)
        #expect(remounted == expectedTree, "after remount:\n\(remounted.difference(from: expectedTree))")
    }

    /// The kernel zeroes its own cached copy of a punched range, so the bytes are checked again
    /// after a remount, from what the daemon stored.
    @Test func punchedAndZeroedRangesReadAsZerosAfterARemount() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        var expected = pattern
        _ = writeFile(volume.path("f"), pattern)
        let fd = open(volume.path("f"), O_RDWR)
        #expect(fallocate(fd, epochfs_FALLOC_FL_PUNCH_HOLE | epochfs_FALLOC_FL_KEEP_SIZE, 1000, 12_000) == 0)
        expected.replaceSubrange(1000..<13_000, with: repeatElement(0, count: 12_000))
        #expect(fallocate(fd, epochfs_FALLOC_FL_ZERO_RANGE, 15_000, 10_000) == 0)
        expected.replaceSubrange(15_000..<20_000, with: repeatElement(0, count: 5000))
        expected += [UInt8](repeating: 0, count: 5000)
        #expect(fallocate(fd, epochfs_FALLOC_FL_ZERO_RANGE | epochfs_FALLOC_FL_KEEP_SIZE, 100, 50) == 0)
        expected.replaceSubrange(100..<150, with: repeatElement(0, count: 50))
        close(fd)
        volume.unmount()
        try volume.mount()
        let stored = FileManager.default.contents(atPath: volume.path("f")).map { Array($0) }
        let same = stored == expected
        #expect(same, "\(stored?.count ?? -1) bytes stored, \(expected.count) expected")
    }

    @Test func fallocateModesThatMoveDataAreCleanlyUnsupported() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        _ = writeFile(volume.path("f"), pattern)
        let before = readAll(volume.path("f"))
        let fd = open(volume.path("f"), O_RDWR)
        defer { close(fd) }
        #expect(fallocate(fd, 0x08, 0, 4096) == -1) // COLLAPSE_RANGE
        #expect(errno == EOPNOTSUPP)
        #expect(fallocate(fd, 0x20, 0, 4096) == -1) // INSERT_RANGE
        #expect(errno == EOPNOTSUPP)
        #expect(readAll(volume.path("f")) == before)
    }
}
