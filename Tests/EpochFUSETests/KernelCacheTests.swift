import CLinux
import Foundation
import Glibc
import Support
import Testing

/// What the kernel keeps of the mount (docs/MOUNTING.md, "What the kernel caches"): a regular
/// file's page cache across opens, and entries and attributes for a day.
@Suite(.serialized) struct KernelCacheTests {
    /// The plaintext bytes the daemon has read for the kernel so far.
    func bytesReadByTheDaemon(_ volume: MountedVolume) throws -> Double {
        let text = String(decoding: try #require(FileManager.default.contents(atPath: volume.path(".epochfs/metrics"))), as: UTF8.self)
        return try #require(try Scrape(text).value("epochfs_bytes_total", ["operation": "read"]))
    }

    /// A file read once is read again, by a new open, from the kernel's page cache: no read
    /// reaches the daemon (keep_cache; without it, every open drops the file's pages).
    @Test func aFileReadOnceIsReadAgainFromTheKernelsCache() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let content = (0..<(16 * 4096)).map { _ in UInt8.random(in: 0...255) }
        let fd = open(volume.path("file"), O_RDWR | O_CREAT, 0o644)
        #expect(content.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } == content.count && fsync(fd) == 0)
        close(fd)
        #expect(try readPastTheKernelCache(volume.path("file")).get() == content)
        let before = try bytesReadByTheDaemon(volume)
        #expect(before >= Double(content.count))
        #expect(try readThrough(volume.path("file")).get() == content)
        #expect(try bytesReadByTheDaemon(volume) == before, "the second open read from the daemon")
    }

    /// The attributes a stat compares: all but the access time (the backing file system sets it
    /// when the daemon reads).
    func attributes(_ info: stat, size: Int) -> String {
        "mode \(String(info.st_mode, radix: 8)) nlink \(info.st_nlink) uid \(info.st_uid) gid \(info.st_gid) size \(size) "
            + "mtime \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec) ctime \(info.st_ctim.tv_sec).\(info.st_ctim.tv_nsec)"
    }

    /// Each name as a stat through the mount shows it, and as the backing object behind it holds
    /// it (found by its inode number, which the mount shows), with the plaintext size.
    func mountAndBacking(_ volume: MountedVolume, _ names: [String]) -> [String] {
        names.map { name in
            var info = stat()
            guard lstat(volume.path(name), &info) == 0 else { return "\(name): errno \(errno)" }
            let seen = attributes(info, size: Int(info.st_size))
            var held = "no backing object"
            let walker = FileManager.default.enumerator(atPath: volume.backing)
            for relative in [""] + (walker?.allObjects.compactMap { $0 as? String } ?? []) {
                var backing = stat()
                guard lstat(volume.backing + "/" + relative, &backing) == 0, backing.st_ino == info.st_ino else { continue }
                let size = backing.st_mode & S_IFMT == S_IFREG ? backingPlaintextSize(Int(backing.st_size)) : Int(backing.st_size)
                held = attributes(backing, size: size)
            }
            return seen == held ? "\(name): \(seen)" : "\(name): the mount shows \(seen), the backing dir holds \(held)"
        }
    }

    /// Every change made through the mount shows at once in every name of what it changed,
    /// although the kernel keeps attributes and entries for a day: nlink and ctime of the other
    /// name after link and unlink, a chmod, an xattr, a rename, a truncate, a write, utimes by
    /// one name seen by another, a directory's nlink and times after mkdir and rmdir in it.
    @Test func everyNameShowsWhatTheBackingDirHoldsAfterEachChange() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        #expect(mkdir(volume.path("d"), 0o755) == 0)
        try Data(repeating: 3, count: 5000).write(to: URL(fileURLWithPath: volume.path("a")))
        let steps: [(String, [String], () -> Int32)] = [
            ("link", ["a", "d/b", "d"], { link(volume.path("a"), volume.path("d/b")) }),
            ("chmod by the other name", ["a", "d/b"], { chmod(volume.path("d/b"), 0o600) }),
            ("chown by the other name", ["a", "d/b"], { chown(volume.path("d/b"), 1234, 5678) }),
            ("xattr", ["a", "d/b"], { epochfs_setxattr(volume.path("a"), "user.k", "v", 1, 0) }),
            ("rename", ["a", "c", "d"], { rename(volume.path("d/b"), volume.path("c")) }),
            ("unlink", ["c", ""], { unlink(volume.path("a")) }),
            ("truncate", ["c"], { truncate(volume.path("c"), 100) }),
            ("write", ["c"], {
                let fd = open(volume.path("c"), O_WRONLY | O_APPEND)
                defer { close(fd) }
                return write(fd, "more", 4) == 4 ? 0 : -1
            }),
            ("utimes", ["c"], {
                var times = [timespec(tv_sec: 1_000_000, tv_nsec: 5), timespec(tv_sec: 2_000_000, tv_nsec: 7)]
                return utimensat(AT_FDCWD, volume.path("c"), &times, 0)
            }),
            ("link again", ["c", "d/e"], { link(volume.path("c"), volume.path("d/e")) }),
            ("unlink by the other name", ["c"], { unlink(volume.path("d/e")) }),
            ("mkdir", ["d", "d/sub"], { mkdir(volume.path("d/sub"), 0o700) }),
            ("rmdir", ["d"], { rmdir(volume.path("d/sub")) }),
        ]
        for (step, names, change) in steps {
            _ = mountAndBacking(volume, names + ["a", "c", "d"]) // cached before the change
            #expect(change() == 0, "\(step): errno \(errno)")
            let seen = mountAndBacking(volume, names)
            #expect(!seen.contains { $0.contains("the mount shows") }, "after \(step): \(seen)")
        }
    }
}
