import CLinux
import Foundation
import Glibc
import Support
import Testing

/// A backing disk that fills up (a small tmpfs): a write, truncate or fallocate that does not
/// fit fails with ENOSPC and changes nothing; space reserved with fallocate stays usable; a
/// rekey needs no space. Every byte is checked again after a remount.
@Suite(.serialized) struct FullDiskTests {
    func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255) } }

    /// Writes `bytes` at `offset` (appends when nil) through a fresh descriptor; 0 or the errno.
    func write(_ path: String, _ bytes: [UInt8], at offset: Int? = nil, sync: Bool = false) -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | (offset == nil ? O_APPEND : 0), 0o600)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        let written = bytes.withUnsafeBytes { raw in
            offset.map { pwrite(fd, raw.baseAddress, raw.count, off_t($0)) } ?? Glibc.write(fd, raw.baseAddress, raw.count)
        }
        if written < 0 { return errno }
        guard written == bytes.count else { return EIO }
        return sync && fsync(fd) != 0 ? errno : 0
    }

    func contents(_ path: String) -> [UInt8]? { FileManager.default.contents(atPath: path).map { Array($0) } }

    /// Whether the file holds exactly `bytes` (a Bool, so that a failure does not print both).
    func holds(_ path: String, _ bytes: [UInt8]) -> Bool { contents(path) == bytes }

    func allocate(_ path: String, mode: Int32, offset: Int, length: Int) -> Int32 {
        let fd = open(path, O_WRONLY)
        defer { close(fd) }
        return epochfs_fallocate(fd, mode, offset, length) == 0 ? 0 : errno
    }

    /// The status file's count of calls answered with each errno of a failing disk.
    func failedCalls(_ volume: MountedVolume) throws -> [String: Int] {
        (try volume.status()["counters"] as? [String: Any])?["errors"] as? [String: Int] ?? [:]
    }

    @Test func aBackingDirRemountedReadOnlyRefusesWritesWithEROFSAndKeepsReading() throws {
        let disk = try SmallDisk(megabytes: 4)
        let volume = try MountedVolume(on: disk)
        defer {
            _ = try? run("/bin/mount", ["-o", "remount,rw", disk.path])
            volume.destroy()
        }
        let stored = random(10_000)
        #expect(write(volume.path("f"), stored, sync: true) == 0)
        #expect(mkdir(volume.path("d"), 0o755) == 0)
        #expect(try run("/bin/mount", ["-o", "remount,ro", disk.path]).status == 0)

        #expect(write(volume.path("f"), random(10), at: 0) == EROFS)
        #expect(write(volume.path("new"), random(10)) == EROFS)
        #expect(mkdir(volume.path("d/sub"), 0o755) == -1 && errno == EROFS)
        #expect(unlink(volume.path("f")) == -1 && errno == EROFS)
        #expect(volume.control("raft-cutover 9") == EROFS, "a header commit fails with the backing errno")
        let intact = holds(volume.path("f"), stored)
        #expect(intact, "reads keep working")
        #expect(try FileManager.default.contentsOfDirectory(atPath: volume.mountpoint).sorted() == ["d", "f"])
        #expect(try failedCalls(volume)["EROFS"] == 5)
        #expect((try volume.status()["last_error"] as? String)?.contains("Read-only file system") == true)
    }

    @Test func writesThatDoNotFitFailWithENOSPCAndLoseNothing() throws {
        let disk = try SmallDisk(megabytes: 4)
        let volume = try MountedVolume(on: disk)
        defer {
            volume.destroy()
            withExtendedLifetime(disk) {} // the tmpfs goes only after the mount on it
        }
        var expected: [String: [UInt8]] = [:]

        // A partial last block (2304 bytes), fsync'd; a dense file; 64 KiB reserved past the
        // end of one file (mode 0, the size grows) and of another (KEEP_SIZE).
        expected["log"] = random(2304)
        #expect(write(volume.path("log"), expected["log"]!, sync: true) == 0)
        expected["dense"] = random(64 * 1024)
        #expect(write(volume.path("dense"), expected["dense"]!, sync: true) == 0)
        expected["grown"] = random(1000)
        #expect(write(volume.path("grown"), expected["grown"]!) == 0)
        #expect(allocate(volume.path("grown"), mode: 0, offset: 0, length: 64 * 1024) == 0)
        expected["grown"]! += [UInt8](repeating: 0, count: 64 * 1024 - 1000)
        expected["kept"] = random(1000)
        #expect(write(volume.path("kept"), expected["kept"]!) == 0)
        #expect(allocate(volume.path("kept"), mode: epochfs_FALLOC_FL_KEEP_SIZE, offset: 1000, length: 64 * 1024) == 0)
        #expect(contents(volume.path("kept"))?.count == 1000, "KEEP_SIZE keeps the size")

        disk.fill()
        // Nothing that needs new space goes through, and each failure leaves its file as it was.
        #expect(write(volume.path("log"), random(10_000)) == ENOSPC)
        #expect(truncate(volume.path("log"), 100_000) == -1 && errno == ENOSPC)
        #expect(allocate(volume.path("log"), mode: 0, offset: 0, length: 1 << 20) == ENOSPC)
        #expect(allocate(volume.path("log"), mode: epochfs_FALLOC_FL_KEEP_SIZE, offset: 0, length: 1 << 20) == ENOSPC)
        #expect(write(volume.path("new"), random(5000)) == ENOSPC)
        let logIntact = holds(volume.path("log"), expected["log"]!)
        #expect(logIntact, "the failed calls left the log as it was")
        // What needs no new space goes through: an append that stays inside the backing file
        // system's last block, an overwrite in place, writes into reserved ranges, a rekey.
        let small = random(100)
        #expect(write(volume.path("log"), small) == 0)
        expected["log"]! += small
        let patch = random(10_000)
        #expect(write(volume.path("dense"), patch, at: 20_000) == 0)
        expected["dense"]!.replaceSubrange(20_000..<30_000, with: patch)
        let fill = random(60 * 1024)
        #expect(write(volume.path("grown"), fill, at: 2000) == 0)
        expected["grown"]!.replaceSubrange(2000..<(2000 + fill.count), with: fill)
        let appended = random(60 * 1024)
        #expect(write(volume.path("kept"), appended) == 0)
        expected["kept"]! += appended
        #expect(volume.control("rekey 2") == 0)
        #expect(try failedCalls(volume)["ENOSPC"] == 5, "status counts each ENOSPC")

        volume.unmount()
        disk.makeRoom(1 << 20)
        try volume.mount()
        for (name, bytes) in expected.sorted(by: { $0.key < $1.key }) {
            let intact = holds(volume.path(name), bytes)
            #expect(intact, "\(name) after a remount")
        }
        #expect(try volume.status()["epoch"] as? Int == 2)
        #expect(write(volume.path("log"), random(100)) == 0, "with room again, appends work")
    }
}
