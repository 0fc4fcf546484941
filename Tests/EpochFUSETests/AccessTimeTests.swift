import CLinux
import Foundation
import Glibc
import Support
import Testing

/// Access times under `-o noatime` (xfstests generic/120). The kernel never sets a FUSE file's
/// atime itself; the backing file system sets it when the daemon reads. So a `noatime` mount
/// reads its backing files and directories with O_NOATIME, and a mount without it keeps the
/// backing file system's rule (relatime here).
@Suite(.serialized) struct AccessTimeTests {
    static let old = 1_000_000_000

    /// The backing object with inode number `inode` (the mount shows the backing numbers).
    func backingPath(of inode: ino_t, in backing: String) throws -> String {
        let walker = FileManager.default.enumerator(atPath: backing)
        while let relative = walker?.nextObject() as? String {
            var info = stat()
            if lstat(backing + "/" + relative, &info) == 0, info.st_ino == inode { return backing + "/" + relative }
        }
        throw TestFailure("no backing object has inode \(inode)")
    }

    /// Sets an old atime on a file and a directory, reads both, appends to the file, all through
    /// the mount with the page cache dropped first; then the backing atimes that changed.
    func accessTimesChanged(mountOptions: [String]) throws -> [String] {
        let volume = try MountedVolume(mountOptions: mountOptions)
        defer { volume.destroy() }
        let file = volume.path("f"), directory = volume.path("d")
        try Data(repeating: 1, count: 3 * 4096 + 100).write(to: URL(fileURLWithPath: file))
        try FileManager.default.createDirectory(atPath: directory + "/entry", withIntermediateDirectories: true)
        var backing: [String: String] = [:]
        for path in [file, directory] {
            // Long before the modification time: relatime sets it again at the next read.
            var times = [timespec(tv_sec: Self.old, tv_nsec: 0), timespec(tv_sec: 0, tv_nsec: epochfs_UTIME_OMIT)]
            #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
            var info = stat()
            #expect(stat(path, &info) == 0)
            backing[path] = try backingPath(of: info.st_ino, in: volume.backing)
        }
        sync()
        try Data("3\n".utf8).write(to: URL(fileURLWithPath: "/proc/sys/vm/drop_caches"))
        #expect(FileManager.default.contents(atPath: file)?.count == 3 * 4096 + 100)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["entry"])
        let appending = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        try appending.seekToEnd()
        try appending.write(contentsOf: Data("more".utf8))
        try appending.close()
        return [file, directory].filter { path in
            var info = stat()
            return stat(backing[path]!, &info) != 0 || info.st_atim.tv_sec != Self.old
        }.map { $0 == file ? "file" : "directory" }
    }

    @Test func aNoatimeMountLeavesBackingAccessTimesAlone() throws {
        #expect(try accessTimesChanged(mountOptions: []) == ["file", "directory"])
        #expect(try accessTimesChanged(mountOptions: ["noatime"]) == [])
    }
}
