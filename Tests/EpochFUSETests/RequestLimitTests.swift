import CLinux
import EpochStore
import EpochVolume
import Foundation
import Glibc
import Support
import Testing

/// No request can bring the daemon down, and every offset, length or size a request carries
/// gets the answer ext4 gives: the same calls run on a directory of a real ext4 file system
/// and on a mount whose backing dir is on it, in the same run, and must answer alike; after
/// each, the daemon must still serve.
@Suite(.serialized) struct RequestLimitTests {
    /// A mount backed by a fresh ext4 file system, and a plain directory beside it on that
    /// file system to compare with.
    final class Setup {
        let disk: Ext4Disk
        let volume: MountedVolume
        let reference: String

        init() throws {
            disk = try Ext4Disk()
            volume = try MountedVolume(on: disk)
            reference = disk.path + "/reference"
            try FileManager.default.createDirectory(atPath: reference, withIntermediateDirectories: true)
        }

        func destroy() { volume.destroy() }

        /// Fails the test unless the daemon still answers: a file made, written and read back.
        func expectAlive(after what: String, sourceLocation: SourceLocation = #_sourceLocation) {
            let path = volume.path("alive")
            let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
            defer { if fd >= 0 { close(fd) } }
            var byte: UInt8 = 0
            let alive = fd >= 0 && pwrite(fd, "x", 1, 0) == 1 && pread(fd, &byte, 1, 0) == 1 && byte == UInt8(ascii: "x")
            #expect(alive, "the daemon died after \(what): \(volume.mountLog.suffix(2000))", sourceLocation: sourceLocation)
        }
    }

    /// What a call answered: its result, or its errno by name; and the size of the file after it.
    static func outcome(_ result: Int, size path: String? = nil) -> String {
        let answer = result < 0 ? errnoName(errno) : "ok \(result)"
        guard let path else { return answer }
        var info = stat()
        return answer + (stat(path, &info) == 0 ? ", size \(info.st_size)" : ", stat \(errnoName(errno))")
    }

    static func errnoName(_ code: Int32) -> String {
        let names: [Int32: String] = [EINVAL: "EINVAL", EFBIG: "EFBIG", EOVERFLOW: "EOVERFLOW", ENXIO: "ENXIO", ENOSPC: "ENOSPC",
                                      E2BIG: "E2BIG", ERANGE: "ERANGE", EOPNOTSUPP: "EOPNOTSUPP", ENOTCONN: "ENOTCONN",
                                      ECONNABORTED: "ECONNABORTED", EIO: "EIO", ENODATA: "ENODATA", EBADF: "EBADF"]
        return names[code] ?? "errno \(code)"
    }

    /// Makes `directory/f` and `directory/src`, 10,000 bytes each, and runs `body` with `f`
    /// open read-write and `src` open read-only.
    static func withFiles(in directory: String, _ body: (_ file: Int32, _ source: Int32, _ path: String) -> String) -> String {
        let path = directory + "/f"
        let content = [UInt8]((0..<10_000).map { UInt8(truncatingIfNeeded: $0 * 7) })
        unlink(path)
        unlink(directory + "/src")
        let file = open(path, O_RDWR | O_CREAT, 0o644)
        let source = open(directory + "/src", O_RDWR | O_CREAT, 0o644)
        defer {
            close(file)
            close(source)
        }
        guard file >= 0, source >= 0, pwrite(file, content, content.count, 0) == content.count,
              pwrite(source, content, content.count, 0) == content.count else { return "setup failed: \(errnoName(errno))" }
        return body(file, source, path)
    }

    /// Runs every case on ext4 and on the mount, expecting the same answers and a live daemon.
    static func compare(_ setup: Setup, _ cases: [(name: String, call: (_ file: Int32, _ source: Int32, _ path: String) -> String)]) {
        var mismatches: [String] = []
        for (name, call) in cases {
            let onExt4 = withFiles(in: setup.reference, call)
            let onMount = withFiles(in: setup.volume.mountpoint, call)
            if onExt4 != onMount { mismatches.append("\(name): ext4 \(onExt4), epochfs \(onMount)") }
            setup.expectAlive(after: name)
            if !mismatches.isEmpty && mismatches.count > 20 { break }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(cases.count) calls answer differently:\n\(mismatches.joined(separator: "\n"))")
    }

    /// The largest file ext4 takes here, measured with ftruncate on the reference directory.
    static func ext4MaxFileSize(_ setup: Setup) -> Int {
        let fd = open(setup.reference + "/probe", O_RDWR | O_CREAT, 0o644)
        defer {
            close(fd)
            unlink(setup.reference + "/probe")
        }
        var taken = 0, refused = Int.max
        while refused - taken > 1 {
            let middle = taken + (refused - taken) / 2
            if ftruncate(fd, off_t(middle)) == 0 { taken = middle } else { refused = middle }
        }
        return taken
    }

    /// Offsets and sizes from 0 to past `off_t`: negative ones, one past ext4's largest file,
    /// and those that crashed the daemon before it checked them. Not ext4's largest file itself:
    /// the mount's is smaller by the ciphertext overhead (`theLargestFileIsExt4sLessTheOverhead`).
    static func extremes(ext4Max: Int) -> [Int] {
        [0, 1, 4095, 4096, 9999, 10_000, 1 << 40, ext4Max + 1, 1 << 62, Int.max - (1 << 32), Int.max - 65_536 - 4096,
         9_223_372_036_854_710_271, Int.max - 65_536, Int.max - 4096, Int.max - 1, Int.max, -1, -4096, Int.min]
    }

    /// The calls of issue 18 that killed the daemon (generic/564 among them): a write at
    /// 9,223,372,036,854,710,271, a truncate to 2^63 − 1, a copy_file_range to 2^63 − 65,537
    /// and a fallocate near 2^63. ext4 refuses each with EFBIG; so must the mount, and live.
    /// Each on a mount of its own, so that each one is shown to be answered.
    @Test func theCallsThatKilledTheDaemonAnswerAsOnExt4() throws {
        let calls: [(name: String, call: (Int32, Int32, String) -> String)] = [
            ("pwrite at 9223372036854710271", { file, _, path in Self.outcome(pwrite(file, "x", 1, 9_223_372_036_854_710_271), size: path) }),
            ("ftruncate to 2^63-1", { file, _, path in Self.outcome(Int(ftruncate(file, off_t.max)), size: path) }),
            ("copy_file_range to 2^63-65537", { file, source, path in
                Self.outcome(epochfs_copy_file_range(source, 0, file, Int64.max - 65_536, 4096), size: path)
            }),
            ("fallocate near 2^63", { file, _, path in Self.outcome(Int(epochfs_fallocate(file, 0, Int.max - 4096, 4096)), size: path) }),
        ]
        for call in calls {
            let setup = try Setup()
            defer { setup.destroy() }
            Self.compare(setup, [call])
        }
    }

    @Test func writesReadsAndTruncatesAtExtremeOffsets() throws {
        let setup = try Setup()
        defer { setup.destroy() }
        let values = Self.extremes(ext4Max: Self.ext4MaxFileSize(setup))
        var cases: [(name: String, call: (Int32, Int32, String) -> String)] = []
        let data = [UInt8](repeating: 0x5A, count: 65_536)
        for offset in values {
            for count in [1, 4096, 65_536] {
                cases.append(("pwrite \(count) at \(offset)", { file, _, path in Self.outcome(pwrite(file, data, count, off_t(offset)), size: path) }))
                cases.append(("pread \(count) at \(offset)", { file, _, _ in
                    var buffer = [UInt8](repeating: 0, count: count)
                    return Self.outcome(pread(file, &buffer, count, off_t(offset)))
                }))
            }
            cases.append(("ftruncate to \(offset)", { file, _, path in Self.outcome(Int(ftruncate(file, off_t(offset))), size: path) }))
            cases.append(("truncate to \(offset)", { _, _, path in Self.outcome(Int(truncate(path, off_t(offset))), size: path) }))
            cases.append(("readahead at \(offset)", { file, _, _ in Self.outcome(epochfs_readahead(file, Int64(offset), 65_536)) }))
            for (whence, label) in [(epochfs_SEEK_DATA, "SEEK_DATA"), (epochfs_SEEK_HOLE, "SEEK_HOLE")] {
                cases.append(("lseek \(label) \(offset)", { file, _, _ in Self.outcome(Int(lseek(file, off_t(offset), whence))) }))
            }
        }
        Self.compare(setup, cases)
    }

    @Test func fallocateInEveryModeAtExtremeOffsets() throws {
        let setup = try Setup()
        defer { setup.destroy() }
        let values = Self.extremes(ext4Max: Self.ext4MaxFileSize(setup))
        let keep = epochfs_FALLOC_FL_KEEP_SIZE, punch = epochfs_FALLOC_FL_PUNCH_HOLE, zero = epochfs_FALLOC_FL_ZERO_RANGE
        let modes: [(Int32, String)] = [(0, "0"), (keep, "KEEP_SIZE"), (punch | keep, "PUNCH_HOLE|KEEP_SIZE"), (punch, "PUNCH_HOLE"),
                                         (zero, "ZERO_RANGE"), (zero | keep, "ZERO_RANGE|KEEP_SIZE")]
        var cases: [(name: String, call: (Int32, Int32, String) -> String)] = []
        for (mode, label) in modes {
            for offset in values {
                for length in [1, 4096, 0, -1, Int.max, Int.max - (1 << 32)] {
                    cases.append(("fallocate \(label) at \(offset) for \(length)", { file, _, path in
                        Self.outcome(Int(epochfs_fallocate(file, mode, offset, length)), size: path)
                    }))
                }
            }
        }
        Self.compare(setup, cases)
    }

    @Test func copyFileRangeAtExtremeOffsets() throws {
        let setup = try Setup()
        defer { setup.destroy() }
        let values = Self.extremes(ext4Max: Self.ext4MaxFileSize(setup))
        var cases: [(name: String, call: (Int32, Int32, String) -> String)] = []
        // From at or past the source's end, the kernel copies nothing and returns 0 before
        // any file system sees the call; it answers EFBIG past ext4's largest file for ext4
        // only, since a FUSE mount's is 2^63 - 1 to it (docs/MOUNTING.md, Limits); at 2^63 - 1 both refuse.
        var pastSourceEnd: [(name: String, call: (Int32, Int32, String) -> String)] = []
        for target in values {
            for (from, length) in [(0, 4096), (0, Int.max), (9000, 65_536), (Int.max - 10, 100), (-1, 10), (20_000, 10)] {
                let call: (Int32, Int32, String) -> String = { file, source, path in
                    Self.outcome(epochfs_copy_file_range(source, Int64(from), file, Int64(target), UInt(bitPattern: length)), size: path)
                }
                let name = "copy_file_range \(length) from \(from) to \(target)"
                if from >= 10_000 && target > 1 << 40 && target < Int.max && length > 0 { pastSourceEnd.append((name, call)) } else { cases.append((name, call)) }
            }
        }
        Self.compare(setup, cases)
        for (name, call) in pastSourceEnd {
            #expect(Self.withFiles(in: setup.volume.mountpoint, call) == "ok 0, size 10000", "\(name)")
            setup.expectAlive(after: name)
        }
    }

    @Test func xattrSizesAndDirectoryOffsets() throws {
        let setup = try Setup()
        defer { setup.destroy() }
        var cases: [(name: String, call: (Int32, Int32, String) -> String)] = []
        for size in [0, 1, 1024, 65_536, 65_537] {
            // Names up to 165 bytes are stored (255 on ext4: `xattrLimits` checks the gap).
            for nameLength in [1, 165, 256] {
                let name = "user." + String(repeating: "n", count: nameLength - 5 > 0 ? nameLength - 5 : 1)
                cases.append(("setxattr \(name.count)-byte name, \(size)-byte value", { _, _, path in
                    let value = [UInt8](repeating: 0x41, count: size)
                    let set = Int(epochfs_setxattr(path, name, value, UInt(size), 0))
                    var back = [UInt8](repeating: 0, count: 65_536)
                    return Self.outcome(set) + "; get " + Self.outcome(epochfs_getxattr(path, name, &back, 65_536))
                        + "; get into 1 byte " + Self.outcome(epochfs_getxattr(path, name, &back, 1))
                }))
            }
        }
        // Directory offsets: ext4 hands out hash cookies, epochfs positions, so only whether the
        // seek and the listing after it succeed is compared, not what is listed.
        for offset in Self.extremes(ext4Max: 0) {
            cases.append(("seek directory to \(offset) and list", { _, _, path in
                let directory = (path as NSString).deletingLastPathComponent
                let fd = open(directory, O_RDONLY | O_DIRECTORY)
                defer { close(fd) }
                let seek = Self.outcome(Int(lseek(fd, off_t(offset), SEEK_SET)) >= 0 ? 0 : -1)
                var buffer = [UInt8](repeating: 0, count: 4096)
                return seek + "; list " + Self.outcome(epochfs_getdents(fd, &buffer, UInt(buffer.count)) >= 0 ? 0 : -1)
            }))
        }
        Self.compare(setup, cases)
    }

    /// The mount's own largest file (docs/FORMAT.md §6.2): ext4's, less the ciphertext overhead,
    /// in whole blocks. Up to it everything works; past it, EFBIG; a write across it is cut short.
    @Test func theLargestFileIsExt4sLessTheOverhead() throws {
        let setup = try Setup()
        defer { setup.destroy() }
        let largest = ContentLimits.maxPlaintextSize(ContentLayout(blockSize: 4096), backingLimit: Self.ext4MaxFileSize(setup))
        #expect(largest == 17_447_359_315_968)
        Self.expectLargestFile(largest, on: setup.volume)
    }

    /// tmpfs takes files of 2^63 − 1 bytes: the largest file is then where backing offsets
    /// would overflow `off_t`, and the blocks at its very end are still written and read.
    @Test func onTmpfsTheLargestFileStopsShortOfOverflow() throws {
        let disk = try SmallDisk(megabytes: 64)
        let volume = try MountedVolume(on: disk)
        defer { volume.destroy() }
        let largest = ContentLimits.maxPlaintextSize(ContentLayout(blockSize: 4096), backingLimit: Int.max)
        #expect(largest == 9_147_441_124_785_696_768)
        Self.expectLargestFile(largest, on: volume)
    }

    static func expectLargestFile(_ largest: Int, on volume: MountedVolume, sourceLocation: SourceLocation = #_sourceLocation) {
        let path = volume.path("large")
        let fd = open(path, O_RDWR | O_CREAT, 0o644)
        #expect(fd >= 0, sourceLocation: sourceLocation)
        defer { close(fd) }
        #expect(ftruncate(fd, off_t(largest + 1)) == -1 && errno == EFBIG, sourceLocation: sourceLocation)
        #expect(ftruncate(fd, off_t(largest)) == 0, sourceLocation: sourceLocation)
        #expect(pwrite(fd, "abcd", 4, off_t(largest - 2)) == 2, sourceLocation: sourceLocation)
        #expect(pwrite(fd, "abcd", 4, off_t(largest)) == -1 && errno == EFBIG, sourceLocation: sourceLocation)
        var back = [UInt8](repeating: 0, count: 4)
        #expect(pread(fd, &back, 4, off_t(largest - 2)) == 2 && back.prefix(2) == [0x61, 0x62], sourceLocation: sourceLocation)
        #expect(epochfs_fallocate(fd, epochfs_FALLOC_FL_KEEP_SIZE, largest - 4096, 4097) == -1 && errno == EFBIG, sourceLocation: sourceLocation)
        #expect(epochfs_fallocate(fd, epochfs_FALLOC_FL_KEEP_SIZE, largest - 4096, 4096) == 0, sourceLocation: sourceLocation)
        var info = stat()
        #expect(fstat(fd, &info) == 0 && info.st_size == off_t(largest), sourceLocation: sourceLocation)
        let alive = open(volume.path("alive"), O_RDWR | O_CREAT, 0o644)
        #expect(alive >= 0 && write(alive, "x", 1) == 1, "the daemon died: \(volume.mountLog.suffix(2000))", sourceLocation: sourceLocation)
        close(alive)
    }
}
