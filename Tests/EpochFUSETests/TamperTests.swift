import CLinux
import Foundation
import Glibc
import Support
import Testing

/// Whoever can write the backing dir changes it between two mounts; the mount then reads every
/// file, and none may read as older, shorter or other data than what fsync acknowledged
/// (docs/FORMAT.md §8). Each mutation is applied at a random place to a fresh copy of a
/// backing dir written through the mount (appends and partial overwrites with fsync, shadow
/// slot copies, a live rekey, a long name, a hard link, a symlink, an xattr).
@Suite(.serialized) struct TamperTests {
    /// What the workload left, as read through the mount.
    struct Model {
        var files: [String: [UInt8]] = [:]
        var xattr: [UInt8] = []
        var linkTarget = ""
        var epoch = 0
    }

    static let longName = String(repeating: "n", count: 200)

    /// Writes the workload through the mount; returns the model and the backing dir copied
    /// mid-way (after the first half of the syncs) for mutations that put older bytes back.
    func writeWorkload(_ volume: MountedVolume, into scratch: TemporaryDirectory) throws -> (Model, older: String) {
        var model = Model()
        var generator = SystemRandomNumberGenerator()
        func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) } }
        func sync(_ fd: Int32) throws { guard fsync(fd) == 0 else { throw TestFailure("fsync: \(errno)") } }
        func pwriteAll(_ fd: Int32, _ bytes: [UInt8], _ offset: Int) throws {
            guard bytes.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }) == bytes.count else {
                throw TestFailure("pwrite: \(errno)")
            }
        }
        let log = open(volume.path("log"), O_RDWR | O_CREAT, 0o644), data = open(volume.path("data"), O_RDWR | O_CREAT, 0o644)
        let long = open(volume.path(Self.longName), O_RDWR | O_CREAT, 0o644)
        defer { [log, data, long].forEach { close($0) } }
        var logContent: [UInt8] = [], dataContent = random(9 * 4096 + 1234), longContent = random(3 * 4096 - 5)
        try pwriteAll(data, dataContent, 0)
        try pwriteAll(long, longContent, 0)
        try [data, long].forEach(sync)
        var older = ""
        for round in 0..<24 {
            let record = random(Int.random(in: 100...900))
            try pwriteAll(log, record, logContent.count)
            logContent += record
            try sync(log)
            // Partial overwrites: rewrites keeping old bytes, so copies go to the shadow slots.
            let offset = Int.random(in: 0..<(dataContent.count - 700)), bytes = random(Int.random(in: 8...600))
            try pwriteAll(data, bytes, offset)
            dataContent.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
            try sync(data)
            if round == 11 {
                older = scratch.path + "/older"
                #expect(try run("/bin/cp", ["-a", volume.backing, older]).status == 0)
                #expect(volume.control("rekey 2") == 0)
            }
        }
        let tail = random(777)
        try pwriteAll(long, tail, 100)
        longContent.replaceSubrange(100..<877, with: tail)
        try sync(long)
        #expect(link(volume.path("data"), volume.path("data-link")) == 0)
        #expect(symlink("data", volume.path("symlink")) == 0)
        model.xattr = Array("a value sealed under the current epoch".utf8)
        #expect(epochfs_setxattr(volume.path("data"), "user.note", model.xattr, UInt(model.xattr.count), 0) == 0)
        model.files = ["log": logContent, "data": dataContent, "data-link": dataContent, Self.longName: longContent]
        model.linkTarget = "data"
        model.epoch = 2
        return (model, older)
    }

    enum Outcome: Equatable { case asWritten, ioError, wrong(String) }

    /// Reads everything through a fresh mount of `volume`'s backing dir: as the model, an I/O
    /// error, or something else (the failure this suite exists to find).
    func readBack(_ volume: MountedVolume, _ model: Model) throws -> [String: Outcome] {
        try volume.mount()
        defer { volume.unmount() }
        var outcomes: [String: Outcome] = [:]
        for (name, content) in model.files {
            switch readThrough(volume.path(name)) {
            case let .success(bytes): outcomes[name] = bytes == content ? .asWritten : .wrong("\(bytes.count) bytes, not the \(content.count) written")
            case let .failure(error): outcomes[name] = error.code == .EIO ? .ioError : .wrong("\(error)")
            }
        }
        var value = [UInt8](repeating: 0, count: 256)
        let length = epochfs_getxattr(volume.path("data"), "user.note", &value, UInt(value.count))
        outcomes["xattr"] = length < 0 ? (errno == EIO ? .ioError : .wrong("errno \(errno)"))
            : Array(value.prefix(length)) == model.xattr ? .asWritten : .wrong("another value")
        let target = try? FileManager.default.destinationOfSymbolicLink(atPath: volume.path("symlink"))
        outcomes["symlink"] = target == model.linkTarget ? .asWritten : target == nil ? .ioError : .wrong("target \(target!)")
        let epoch = (try? volume.status())?["epoch"] as? Int
        outcomes["epoch"] = epoch == model.epoch ? .asWritten : .wrong("epoch \(epoch.map(String.init) ?? "?")")
        return outcomes
    }

    /// The backing files of the workload by plaintext name, told apart by size (all differ).
    func backingFile(_ backing: String, holding size: Int) -> String? {
        let enumerator = FileManager.default.enumerator(atPath: backing)
        while let relative = enumerator?.nextObject() as? String {
            let path = backing + "/" + relative
            var info = stat()
            let name = (relative as NSString).lastPathComponent
            guard !name.hasPrefix("epochfs.") || (name.hasPrefix("epochfs.long.") && !name.hasSuffix(".name")), lstat(path, &info) == 0,
                  info.st_mode & S_IFMT == S_IFREG, backingPlaintextSize(Int(info.st_size)) == size else { continue }
            return path
        }
        return nil
    }

    /// The kinds of change this suite makes, each detected (the file it changes reads EIO) or
    /// harmless (it reads as written); never other data.
    enum Mutation: CaseIterable {
        case flipInASlot, slotFromOlderCopy, flipInAHeaderSlot, cutAtABlockBoundary, cutAnywhere, zeroedBlock, flipInTheRecord,
             flipInABlock

        /// The file it changes must read EIO: the change always breaks something it reads. (A
        /// slot may hold no current copy, and a block in place may have its current copy in a
        /// slot: changing what no read uses is harmless.)
        var alwaysDetected: Bool { ![.flipInASlot, .slotFromOlderCopy, .flipInAHeaderSlot, .flipInABlock].contains(self) }
    }

    @Test func noChangeToTheBackingDirReadsAsOtherData() throws {
        let scratch = TemporaryDirectory()
        let volume = try MountedVolume(in: scratch, name: "volume")
        defer { volume.destroy() }
        let (model, older) = try writeWorkload(volume, into: scratch)
        volume.unmount()
        let pristine = scratch.path + "/pristine"
        #expect(try run("/bin/cp", ["-a", volume.backing, pristine]).status == 0)
        #expect(try readBack(volume, model).values.allSatisfy { $0 == .asWritten }, "the untouched volume")

        var detected: [Mutation: Int] = [:], harmless: [Mutation: Int] = [:], wrong: [String] = []
        let rounds = 30
        for mutation in Mutation.allCases {
            for _ in 0..<rounds {
                _ = try run("/bin/rm", ["-rf", volume.backing])
                #expect(try run("/bin/cp", ["-a", pristine, volume.backing]).status == 0)
                let name = ["log", "data", Self.longName].randomElement()!
                let file = try #require(backingFile(volume.backing, holding: model.files[name]!.count))
                var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
                let blocks = (model.files[name]!.count + 4095) / 4096
                switch mutation {
                case .flipInASlot:
                    let slot = Int.random(in: 0..<2)
                    bytes[slot * slotSize + Int.random(in: 32..<slotSize)] ^= UInt8.random(in: 1...255)
                case .slotFromOlderCopy:
                    // The same file in the copy taken mid-way, found by its record's file id.
                    guard let earlier = sameFile(as: bytes, in: older) else { continue }
                    let slot = Int.random(in: 0..<2)
                    let range = (slot * slotSize)..<((slot + 1) * slotSize)
                    bytes.replaceSubrange(range, with: earlier[range])
                case .flipInAHeaderSlot:
                    let header = volume.backing + "/epochfs.header"
                    var headerBytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: header)))
                    headerBytes[Int.random(in: 0..<2) * 65_536 + Int.random(in: 0..<65_536)] ^= 0x01
                    try Data(headerBytes).write(to: URL(fileURLWithPath: header))
                case .cutAtABlockBoundary:
                    bytes.removeLast(bytes.count - (dataOffset + Int.random(in: 0..<blocks) * 4130))
                case .cutAnywhere:
                    bytes.removeLast(Int.random(in: 1...(bytes.count - dataOffset)))
                case .zeroedBlock:
                    let block = Int.random(in: 0..<blocks)
                    let start = dataOffset + block * 4130
                    bytes.replaceSubrange(start..<min(bytes.count, start + 4130), with: [UInt8](repeating: 0, count: min(bytes.count, start + 4130) - start))
                case .flipInTheRecord:
                    bytes[recordOffset + Int.random(in: 0..<512)] ^= UInt8.random(in: 1...255)
                case .flipInABlock:
                    bytes[Int.random(in: dataOffset..<bytes.count)] ^= UInt8.random(in: 1...255)
                }
                if mutation != .flipInAHeaderSlot { try Data(bytes).write(to: URL(fileURLWithPath: file)) }
                let outcomes = try readBack(volume, model)
                for (item, outcome) in outcomes {
                    if case let .wrong(what) = outcome { wrong.append("\(mutation) of \(name): \(item) read \(what)") }
                }
                let changed = name == "data" ? ["data", "data-link"] : [name]
                if changed.allSatisfy({ outcomes[$0] == .ioError }) {
                    detected[mutation, default: 0] += 1
                } else {
                    harmless[mutation, default: 0] += 1
                    if mutation.alwaysDetected { wrong.append("\(mutation) of \(name) went unnoticed") }
                }
            }
        }
        print("tamper suite: detected \(detected), harmless \(harmless), wrong \(wrong.count)")
        #expect(wrong.isEmpty, "\(wrong.count) mutations read as other data: \(wrong.prefix(5))")
        // The slot copies that the records claim are the current ones: some flips there must be caught.
        #expect(detected[.flipInASlot, default: 0] > 0)
        #expect(detected[.slotFromOlderCopy, default: 0] > 0)
    }

    /// The backing file in `directory` whose record names the same file id as `bytes`'s.
    func sameFile(as bytes: [UInt8], in directory: String) -> [UInt8]? {
        let fileID = bytes[(recordOffset + 4)..<(recordOffset + 20)]
        let enumerator = FileManager.default.enumerator(atPath: directory)
        while let relative = enumerator?.nextObject() as? String {
            guard let other = try? [UInt8](Data(contentsOf: URL(fileURLWithPath: directory + "/" + relative))),
                  other.count > recordOffset + 20, other[(recordOffset + 4)..<(recordOffset + 20)] == fileID else { continue }
            return other
        }
        return nil
    }

    /// Names in committed directories (docs/FORMAT.md §5.6): entries of a directory that an
    /// fsync of it made durable, swapped, deleted or moved into another directory in the
    /// backing dir, or a subdirectory put back from before its last commits, each read EIO
    /// through a fresh mount, never as another file or as missing; the names left alone read
    /// as written.
    @Test func noNameChangeInACommittedDirectoryReadsAsOtherData() throws {
        let scratch = TemporaryDirectory()
        let volume = try MountedVolume(in: scratch, name: "names")
        defer { volume.destroy() }
        let long = Self.longName
        var contents: [String: [UInt8]] = [:]
        #expect(mkdir(volume.path("dir"), 0o755) == 0)
        for (name, size) in [("log", 3000), (long, 5000), ("dir/inner", 700)] {
            let content = (0..<size).map { _ in UInt8.random(in: 0...255) }
            let fd = open(volume.path(name), O_RDWR | O_CREAT, 0o644)
            #expect(content.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } == size && fsync(fd) == 0)
            close(fd)
            contents[name] = content
        }
        #expect(symlink("log", volume.path("symlink")) == 0)
        func syncDirectory(_ directory: String) {
            let fd = open(volume.path(directory), O_RDONLY | O_DIRECTORY)
            #expect(fsync(fd) == 0)
            close(fd)
        }
        syncDirectory("dir")
        // A copy of dir as that commit left it, then two more commits of dir (the second makes
        // the first one's record durable), then the root's, which binds that record.
        let olderDir = scratch.path + "/older-dir"
        let dirEntry = try #require(try FileManager.default.contentsOfDirectory(atPath: volume.backing).first { entry in
            var info = stat()
            return !entry.hasPrefix("epochfs.") && lstat(volume.backing + "/" + entry, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
        })
        #expect(try run("/bin/cp", ["-a", volume.backing + "/" + dirEntry, olderDir]).status == 0)
        for name in ["dir/inner2", "dir/inner3"] {
            let fd = open(volume.path(name), O_RDWR | O_CREAT, 0o644)
            #expect(fsync(fd) == 0)
            close(fd)
            syncDirectory("dir")
        }
        syncDirectory("")
        let names = ["log", long, "symlink", "dir"]
        volume.unmount()
        let pristine = scratch.path + "/pristine"
        #expect(try run("/bin/cp", ["-a", volume.backing, pristine]).status == 0)

        /// The root's backing entry of `name`: the files told apart by size, the one symlink, the one directory.
        func backingEntry(_ name: String) throws -> String {
            for entry in try FileManager.default.contentsOfDirectory(atPath: volume.backing) where !entry.hasPrefix("epochfs.") || (entry.hasPrefix("epochfs.long.") && !entry.hasSuffix(".name")) {
                var info = stat()
                guard lstat(volume.backing + "/" + entry, &info) == 0 else { continue }
                let found = switch info.st_mode & S_IFMT {
                case S_IFLNK: name == "symlink"
                case S_IFDIR: name == "dir"
                default: contents[name].map { backingPlaintextSize(Int(info.st_size)) == $0.count } ?? false
                }
                if found { return volume.backing + "/" + entry }
            }
            throw TestFailure("no backing entry for \(name)")
        }
        /// How each name reads now, by the name a mutation changes ("dir" reads through dir/inner).
        func readNames() throws -> [String: Outcome] {
            try volume.mount()
            defer { volume.unmount() }
            var outcomes: [String: Outcome] = [:]
            for (name, path) in [("log", "log"), (long, long), ("dir", "dir/inner")] {
                switch readThrough(volume.path(path)) {
                case let .success(bytes): outcomes[name] = bytes == contents[path] ? .asWritten : .wrong("\(bytes.count) other bytes")
                case let .failure(error): outcomes[name] = error.code == .EIO ? .ioError : .wrong("\(error)")
                }
            }
            let target = try? FileManager.default.destinationOfSymbolicLink(atPath: volume.path("symlink"))
            outcomes["symlink"] = target == "log" ? .asWritten : target == nil ? (errno == EIO ? .ioError : .wrong("errno \(errno)"))
                : .wrong("target \(target!)")
            return outcomes
        }

        var wrong: [String] = [], counts: [String: Int] = [:]
        for kind in ["swap", "delete", "move", "older"] {
            for _ in 0..<(kind == "older" ? 3 : 20) {
                _ = try run("/bin/rm", ["-rf", volume.backing])
                #expect(try run("/bin/cp", ["-a", pristine, volume.backing]).status == 0)
                let name = kind == "older" ? "dir" : (kind == "move" ? names.filter { $0 != "dir" } : names).randomElement()!
                var changed = [name]
                let entry = try backingEntry(name)
                switch kind {
                case "swap":
                    let other = names.filter { $0 != name }.randomElement()!
                    let otherEntry = try backingEntry(other)
                    #expect(rename(entry, entry + ".x") == 0 && rename(otherEntry, entry) == 0 && rename(entry + ".x", otherEntry) == 0)
                    changed.append(other)
                case "delete":
                    _ = try run("/bin/rm", ["-rf", entry])
                case "older": // the whole of dir put back from before its last two commits
                    _ = try run("/bin/rm", ["-rf", entry])
                    #expect(try run("/bin/cp", ["-a", olderDir, entry]).status == 0)
                default:
                    #expect(rename(entry, try backingEntry("dir") + "/" + URL(fileURLWithPath: entry).lastPathComponent) == 0)
                }
                let outcomes = try readNames()
                for (item, outcome) in outcomes {
                    let expected: Outcome = changed.contains(item) ? .ioError : .asWritten
                    if outcome != expected { wrong.append("\(kind) of \(changed): \(item) read \(outcome), not \(expected)") }
                }
                counts[kind, default: 0] += 1
            }
        }
        print("tamper suite, names: \(counts) mutations, \(wrong.count) not read as EIO")
        #expect(wrong.isEmpty, "\(wrong.count): \(wrong.prefix(5))")
    }

    /// The side files of two long names swapped (docs/FORMAT.md §5.3): the listing fails with
    /// EIO rather than list each name for the other's entry, and fsck names both; a lookup,
    /// which hashes the name it is given, still finds each file's own content.
    @Test func swappedLongNameSideFilesFailTheListing() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let names = [String(repeating: "a", count: 200), String(repeating: "b", count: 200)]
        for (index, name) in names.enumerated() {
            let fd = open(volume.path(name), O_RDWR | O_CREAT, 0o644)
            #expect(write(fd, name, 100 * (index + 1)) == 100 * (index + 1))
            close(fd)
        }
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: volume.path(""))).isSuperset(of: names))
        volume.unmount()
        let sideFiles = try FileManager.default.contentsOfDirectory(atPath: volume.backing)
            .filter { $0.hasPrefix("epochfs.long.") && $0.hasSuffix(".name") }.map { volume.backing + "/" + $0 }
        try swapContents(sideFiles)
        try volume.mount()
        let dir = try #require(opendir(volume.path("")))
        defer { closedir(dir) }
        errno = 0
        while readdir(dir) != nil {}
        #expect(errno == EIO)
        for (index, name) in names.enumerated() {
            #expect(try readThrough(volume.path(name)).get() == Array(name.utf8.prefix(100 * (index + 1))))
        }
        volume.unmount()
        try expectFsckFindsBoth(volume, "another entry's name")
    }

    /// The link files of two long symlinks swapped (docs/FORMAT.md §5.4): each symlink reads
    /// EIO, never the other's target, and fsck names both.
    @Test func swappedLinkFilesOfLongSymlinksReadEIO() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let targets = ["a", "b"].map { String(repeating: $0, count: 3100) }
        for (index, target) in targets.enumerated() { #expect(symlink(target, volume.path("link\(index)")) == 0) }
        var buffer = [CChar](repeating: 0, count: 8192)
        #expect(readlink(volume.path("link0"), &buffer, buffer.count) == targets[0].utf8.count)
        volume.unmount()
        let linkFiles = try FileManager.default.contentsOfDirectory(atPath: volume.backing + "/epochfs.links")
            .map { volume.backing + "/epochfs.links/" + $0 }
        try swapContents(linkFiles)
        try volume.mount()
        for index in 0..<2 {
            #expect(readlink(volume.path("link\(index)"), &buffer, buffer.count) == -1 && errno == EIO)
        }
        volume.unmount()
        try expectFsckFindsBoth(volume, "another entry's name or target")
    }

    /// Swaps the bytes of the two files at `paths` (side files the mount reads).
    func swapContents(_ paths: [String]) throws {
        try #require(paths.count == 2)
        let contents = try paths.reversed().map { try Data(contentsOf: URL(fileURLWithPath: $0)) }
        for (path, bytes) in zip(paths, contents) { try bytes.write(to: URL(fileURLWithPath: path)) }
    }

    /// fsck finds the volume damaged and reports `finding` for each of two entries.
    func expectFsckFindsBoth(_ volume: MountedVolume, _ finding: String) throws {
        let fsck = try volume.epochfs("fsck", volume.backing)
        #expect(fsck.status == 1, "fsck: \(fsck.stdout)")
        #expect(fsck.stdout.components(separatedBy: finding).count == 3, "fsck: \(fsck.stdout)")
    }

    /// A file cut in the backing dir while the mount holds it open, after a sync: its size as
    /// stat asks the daemon for it is an error, never the shorter file.
    @Test func aFileCutUnderTheMountIsAnErrorForStat() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let content = (0..<(6 * 4096)).map { _ in UInt8.random(in: 0...255) }
        let fd = open(volume.path("file"), O_RDWR | O_CREAT, 0o644)
        defer { close(fd) }
        #expect(content.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } == content.count && fsync(fd) == 0)
        #expect(try readThrough(volume.path("file")).get() == content)
        func forcedSize() -> Result<Int, POSIXError> {
            var size: UInt64 = 0
            guard epochfs_statx_size(fd, 1, &size) == 0 else { return .failure(POSIXError(POSIXErrorCode(rawValue: errno)!)) }
            return .success(Int(size))
        }
        #expect(try forcedSize().get() == content.count)
        #expect(truncate(backingFiles(volume)[0], off_t(dataOffset + 2 * 4130)) == 0)
        #expect(isEIO(forcedSize()))
    }

    /// The case the integrity issue was opened with: a slot copy that fsync acknowledged,
    /// damaged by one flipped byte, must not give way to the older copy in place.
    @Test func aDamagedSlotCopyDoesNotBringBackTheOlderBlock() throws {
        let fsck = try expectSyncedFileTamperedReadsEIO([(0, 0x11, 8192), (100, 0x22, 8)]) { bytes in
            bytes[232] ^= 0x01
        }
        #expect(fsck.contains("block 0"), "fsck: \(fsck)")
    }

    /// A slot holding an older copy of a block whose copy in place the last commit found
    /// current: whatever is done to the copy in place (a byte of its nonce flipped, or the
    /// nonce the slot copy supersedes written over it, so that the slot looks current), the
    /// older copy never stands in for it (docs/FORMAT.md §6.2, claims of kind 2).
    @Test(arguments: ["flip", "supersedes"]) func theCopyInPlaceDamagedNeverBringsBackTheSlotsOlderCopy(how: String) throws {
        _ = try expectSyncedFileTamperedReadsEIO([(0, 0x11, 8192), (100, 0x22, 8), (200, 0x33, 8)]) { bytes in
            let nonceInPlace = (dataOffset + 6)..<(dataOffset + 18)
            #expect(bytes[(32 + 6)..<(32 + 18)] != bytes[nonceInPlace], "the slot's copy is an older one")
            switch how {
            case "flip": bytes[nonceInPlace.lowerBound + Int.random(in: 0..<12)] ^= UInt8.random(in: 1...255)
            default: bytes.replaceSubrange(nonceInPlace, with: bytes[10..<22])
            }
        }
    }

    /// Writes `writes` (offset, byte, count) to one file, each followed by fsync, unmounts, and
    /// lets `tamper` change its backing file (slot 0 must hold block 0): the file then reads EIO
    /// and fsck finds the volume damaged. Returns fsck's output.
    func expectSyncedFileTamperedReadsEIO(_ writes: [(offset: Int, byte: UInt8, count: Int)],
                                          _ tamper: (inout [UInt8]) -> Void) throws -> String {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let fd = open(volume.path("file"), O_RDWR | O_CREAT, 0o644)
        for (offset, byte, count) in writes {
            let bytes = [UInt8](repeating: byte, count: count)
            #expect(bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) } == count)
            #expect(fsync(fd) == 0)
        }
        close(fd)
        volume.unmount()
        let backing = backingFiles(volume)[0]
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: backing)))
        #expect(bytes[0..<8] == [0, 0, 0, 0, 0, 0, 0, 0][...], "slot 0 holds block 0")
        tamper(&bytes)
        try Data(bytes).write(to: URL(fileURLWithPath: backing))
        try volume.mount()
        #expect(isEIO(readThrough(volume.path("file"))))
        volume.unmount()
        let fsck = try volume.epochfs("fsck", volume.backing)
        #expect(fsck.status == 1, "fsck: \(fsck.stdout)")
        return fsck.stdout
    }
}

/// A shadow slot of a 4096-byte-block volume: 32 header bytes and a sealed block.
let slotSize = 32 + 4130

/// The plaintext size of a backing file of `size` bytes (docs/FORMAT.md §6).
func backingPlaintextSize(_ size: Int) -> Int {
    guard size > dataOffset else { return 0 }
    let body = size - dataOffset
    return body / 4130 * 4096 + max(0, body % 4130 - 34)
}
