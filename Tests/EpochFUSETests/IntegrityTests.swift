import CLinux
import Foundation
import Glibc
import Synchronization
import Support
import Testing

/// The key_id (epoch) of each block of a backing file (docs/FORMAT.md §6).
func blockEpochs(_ backingFile: String, blockSize: Int = 4096) throws -> [UInt32] {
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: backingFile)))
    let slotsEnd = 2 * (32 + blockSize + 34), recordOffset = (slotsEnd + 511) / 512 * 512
    return stride(from: recordOffset + 512, to: bytes.count, by: blockSize + 34).map { offset in
        bytes[(offset + 2)..<(offset + 6)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }
}

/// Backing files (not epochfs's own) under the backing root, largest first.
func backingFiles(_ volume: MountedVolume) -> [String] {
    let enumerator = FileManager.default.enumerator(atPath: volume.backing)
    var files: [(String, Int)] = []
    while let relative = enumerator?.nextObject() as? String {
        let name = (relative as NSString).lastPathComponent
        guard !name.hasPrefix("epochfs.") else { continue }
        let path = volume.backing + "/" + relative
        var info = stat()
        if lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG { files.append((path, Int(info.st_size))) }
    }
    return files.sorted { $0.1 > $1.1 }.map(\.0)
}

/// Reads a whole file through the mount: its bytes, or the errno.
func readThrough(_ path: String) -> Result<[UInt8], POSIXError> {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return .failure(POSIXError(POSIXErrorCode(rawValue: errno)!)) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n < 0 { return .failure(POSIXError(POSIXErrorCode(rawValue: errno)!)) }
        if n == 0 { return .success(bytes) }
        bytes += buffer.prefix(n)
    }
}

/// Reads a whole file through the mount after dropping the kernel's page cache of it, so that
/// every block is asked of the daemon. Regular files keep that cache across opens (keep_cache),
/// and the attacker of docs/FORMAT.md §8.1 is seen only for what the kernel does not keep: a
/// test that changes the backing dir under a live mount and expects EIO reads this way.
/// (When the open fails, the change broke the record, and the read fails the same way.)
func readPastTheKernelCache(_ path: String) -> Result<[UInt8], POSIXError> {
    let fd = open(path, O_RDONLY)
    if fd >= 0 {
        defer { close(fd) }
        let failed = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        guard failed == 0 else { return .failure(POSIXError(POSIXErrorCode(rawValue: failed)!)) }
    }
    return readThrough(path)
}

func isEIO<Value>(_ result: Result<Value, POSIXError>) -> Bool {
    if case let .failure(error) = result { return error.code == .EIO }
    return false
}

@Suite(.serialized) struct IntegrityTests {
    /// 8 threads write overlapping 32 KiB regions of one file (each write one request, so each
    /// overlap ends up wholly one writer's) while readers read it, and 8 more write their own files.
    @Test func concurrentWriters() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let shared = volume.path("shared")
        let region = 32_768, stride = 24_576, rounds = 60
        _ = FileManager.default.createFile(atPath: shared, contents: nil)
        let readErrors = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 18) { worker in
            if worker < 8 { // overlapping writers
                let fd = open(shared, O_WRONLY)
                defer { close(fd) }
                let bytes = [UInt8](repeating: UInt8(worker + 1), count: region)
                for _ in 0..<rounds { _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, region, off_t(worker * stride)) } }
            } else if worker < 16 { // own files, random offsets, checked against a model
                let path = volume.path("own-\(worker)")
                var model = [UInt8]()
                let fd = open(path, O_RDWR | O_CREAT, 0o644)
                defer { close(fd) }
                for round in 0..<rounds {
                    let offset = Int.random(in: 0..<50_000), count = Int.random(in: 1..<9000)
                    let bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: worker * 31 + round), count: count)
                    _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, count, off_t(offset)) }
                    if model.count < offset + count { model += [UInt8](repeating: 0, count: offset + count - model.count) }
                    model.replaceSubrange(offset..<offset + count, with: bytes)
                }
                try? Data(model).write(to: URL(fileURLWithPath: volume.root + "/model-\(worker)"))
            } else { // readers of the shared file: never an integrity error
                for _ in 0..<rounds {
                    if case .failure = readThrough(shared) { readErrors.withLock { $0 += 1 } }
                }
            }
        }
        #expect(readErrors.withLock { $0 } == 0)
        guard case let .success(content) = readThrough(shared) else { Issue.record("shared file unreadable"); return }
        #expect(content.count == 7 * stride + region)
        for worker in 0..<8 {
            let start = worker * stride
            // The part only this worker writes.
            let ownStart = worker == 0 ? 0 : start + (region - stride)
            let ownEnd = worker == 7 ? start + region : start + stride
            #expect(content[ownStart..<ownEnd].allSatisfy { $0 == UInt8(worker + 1) }, "worker \(worker) region")
            if worker < 7 { // overlap with the next worker: one writer's bytes throughout
                let overlap = content[(start + stride)..<(start + region)]
                #expect(Set(overlap).count == 1 && [UInt8(worker + 1), UInt8(worker + 2)].contains(overlap.first!), "overlap \(worker)")
            }
        }
        for worker in 8..<16 {
            let model = [UInt8](try Data(contentsOf: URL(fileURLWithPath: volume.root + "/model-\(worker)")))
            #expect(try readThrough(volume.path("own-\(worker)")).get() == model, "file of worker \(worker)")
        }
    }

    /// A writer keeps writing while the control file rekeys 20 times; everything reads back and
    /// blocks written after the last rekey carry the newest epoch.
    @Test func rekeyUnderLoad() throws {
        let volume = try MountedVolume(epochs: 21)
        defer { volume.destroy() }
        let path = volume.path("log")
        let stop = Mutex(false)
        let written = Mutex([UInt8]())
        let writer = Thread {
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            defer { close(fd) }
            var counter = 0
            while !stop.withLock({ $0 }) {
                let record = Array("record \(counter) ".utf8) + [UInt8](repeating: UInt8(counter % 251), count: 1000)
                guard record.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == record.count else { break }
                written.withLock { $0 += record }
                counter += 1
            }
        }
        writer.start()
        // Each epoch gets 8 KiB of records (two whole blocks) before the next rekey: waited
        // for, not slept for.
        func awaitRecords() {
            let target = written.withLock { $0.count } + 8192
            while written.withLock({ $0.count }) < target && !writer.isFinished { usleep(1000) }
        }
        for epoch in 2...21 {
            awaitRecords()
            #expect(volume.control("rekey \(epoch)") == 0, "rekey \(epoch)")
        }
        awaitRecords()
        stop.withLock { $0 = true }
        while !writer.isFinished { usleep(10_000) }

        let status = try volume.status()
        #expect(status["epoch"] as? Int == 21)
        #expect((status["keyring"] as? [[String: Any]])?.count == 21)
        #expect(try readThrough(path).get() == written.withLock { $0 }, "the log does not read back")
        // Blocks of the log carry several epochs; a file written now carries only the newest.
        let logEpochs = try blockEpochs(backingFiles(volume)[0])
        #expect(Set(logEpochs).count > 15, "epochs in the log: \(Set(logEpochs).sorted())")
        #expect(logEpochs.allSatisfy { (1...21).contains($0) })
        try Data(repeating: 0x42, count: 20_000).write(to: URL(fileURLWithPath: volume.path("after")))
        // The newest backing file of 4 full blocks and one of 3616 bytes is "after".
        let expectedSize = dataOffset + 4 * 4130 + 3616 + 34
        let afterFile = backingFiles(volume).first { path in
            ((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0) == expectedSize
        }
        #expect(try afterFile.map { try blockEpochs($0) } == [21, 21, 21, 21, 21])
        // A rekey below the current epoch is refused with ESTALE and shows in status.
        #expect(volume.control("rekey 3") == ESTALE)
        #expect((try volume.status()["last_error"] as? String)?.contains("epoch 3") == true)
        // After a remount everything still reads back.
        volume.unmount()
        try volume.mount()
        #expect(try readThrough(path).get() == written.withLock { $0 })
    }

    @Test func controlFileErrorsAndPermissions() throws {
        let volume = try MountedVolume(epochs: 2)
        defer { volume.destroy() }
        #expect(volume.control("rekey") == EINVAL)
        #expect(volume.control("launch missiles") == EINVAL)
        #expect(volume.control("rekey 0") == EINVAL)
        #expect(volume.control("rekey 5") == EIO) // no key file for epoch 5
        #expect(try volume.status()["epoch"] as? Int == 1)
        #expect(volume.control("raft-cutover 1200") == 0)
        #expect(try volume.status()["raft_cutover"] as? Int == 1200)
        // The CLI wraps both files: exit codes as documented, status as text and JSON.
        let rekeyed = try run(volume.binary, ["rekey", "--mount", volume.mountpoint, "2"])
        #expect(rekeyed.status == 0, "\(rekeyed.stderr)")
        #expect(try run(volume.binary, ["rekey", "--mount", volume.mountpoint, "1"]).status == 3)
        let missingKey = try run(volume.binary, ["rekey", "--mount", volume.mountpoint, "9"])
        #expect(missingKey.status == 2)
        #expect(missingKey.stderr.contains("epoch 9"), "\(missingKey.stderr)")
        let text = try run(volume.binary, ["status", volume.mountpoint])
        #expect(text.stdout.contains("epoch         2") && text.stdout.contains("1 read-only, 2 active"), "\(text.stdout)")
        let json = try run(volume.binary, ["status", volume.mountpoint, "--json"])
        #expect(json.stdout.contains("\"epoch\":2") && json.stdout.contains("\"last_error\":"))
        #expect(try volume.status()["raft_cutover"] as? Int == 1200)
        // Another user may not write control (EPERM), even with the file opened by root first.
        let attempt = try run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c",
                                                  "echo 'rekey 2' > \(volume.path(".epochfs/control"))"])
        #expect(attempt.status != 0)
        // Offline, the header agrees with what the mount reported.
        volume.unmount()
        let info = try run(volume.binary, ["info", volume.backing, "--json"])
        #expect(info.stdout.contains("\"epoch\":2") && info.stdout.contains("\"raft_cutover\":1200"))
    }

    /// Flipping any byte of a backing file gives EIO, never other data.
    @Test func everyFlippedByteIsAnIOError() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let content = (0..<5000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try Data(content).write(to: URL(fileURLWithPath: volume.path("victim")))
        let backing = backingFiles(volume)[0]
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: backing)))
        #expect(original.count == dataOffset + 4130 + 904 + 34)
        var wrong = 0
        for index in recordOffset..<original.count {
            var tampered = original
            tampered[index] ^= 0x5a
            try Data(tampered).write(to: URL(fileURLWithPath: backing))
            let result = readPastTheKernelCache(volume.path("victim"))
            if !isEIO(result) { wrong += 1 }
        }
        #expect(wrong == 0, "\(wrong) flipped bytes did not give EIO")
        // The shadow slots before the file record are unused here: a flipped byte in them (or in
        // the zeros up to the record) changes nothing that is read.
        for index in stride(from: 0, to: recordOffset, by: 97) {
            var tampered = original
            tampered[index] ^= 0x5a
            try Data(tampered).write(to: URL(fileURLWithPath: backing))
            #expect(try readPastTheKernelCache(volume.path("victim")).get() == content, "flipped byte \(index) of the slots")
        }
        try Data(original).write(to: URL(fileURLWithPath: backing))
        #expect(try readPastTheKernelCache(volume.path("victim")).get() == content)
        #expect(((try volume.status()["counters"] as? [String: Any])?["authentication_failures"] as? Int ?? 0) > 0)
    }

    @Test func movedCopiedAndReplayedBlocksAreIOErrors() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let a = (0..<12_288).map { UInt8(truncatingIfNeeded: $0 / 4096 + 1) } // three blocks: 1s, 2s, 3s
        try Data(a).write(to: URL(fileURLWithPath: volume.path("a")))
        try Data(repeating: 9, count: 8192).write(to: URL(fileURLWithPath: volume.path("b")))
        let files = backingFiles(volume) // a (3 blocks) first, then b
        let backingA = files[0], backingB = files[1]
        let originalA = [UInt8](try Data(contentsOf: URL(fileURLWithPath: backingA)))
        let originalB = [UInt8](try Data(contentsOf: URL(fileURLWithPath: backingB)))
        func block(_ bytes: [UInt8], _ index: Int) -> ArraySlice<UInt8> { bytes[position(index)] }
        func position(_ index: Int) -> Range<Int> { (dataOffset + index * 4130)..<(dataOffset + (index + 1) * 4130) }
        func check(_ tampered: [UInt8], _ what: String) throws {
            try Data(tampered).write(to: URL(fileURLWithPath: backingA))
            #expect(isEIO(readPastTheKernelCache(volume.path("a"))), "\(what) did not give EIO")
            try Data(originalA).write(to: URL(fileURLWithPath: backingA))
        }
        var swapped = originalA
        swapped.replaceSubrange(position(0), with: block(originalA, 1))
        swapped.replaceSubrange(position(1), with: block(originalA, 0))
        try check(swapped, "swapping two blocks")
        var foreign = originalA
        foreign.replaceSubrange(position(1), with: block(originalB, 1))
        try check(foreign, "a block from another file")
        // An older copy of the file, where its block 2 is put at position 1.
        var replayed = originalA
        replayed.replaceSubrange(position(1), with: block(originalA, 2))
        try check(replayed, "an older block at another position")
        #expect(try readPastTheKernelCache(volume.path("a")).get() == a)
        // A whole zeroed block of a file that no fsync made durable reads as a hole: no commit
        // of its record says it held data (docs/FORMAT.md §8).
        let c = volume.path("c")
        let fd = open(c, O_RDWR | O_CREAT, 0o644)
        defer { close(fd) }
        #expect(a.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } == a.count)
        let backingC = try #require(backingFiles(volume).first { ![backingA, backingB].contains($0) })
        let unsynced = [UInt8](try Data(contentsOf: URL(fileURLWithPath: backingC)))
        var zeroed = unsynced
        zeroed.replaceSubrange(position(1), with: [UInt8](repeating: 0, count: 4130))
        try Data(zeroed).write(to: URL(fileURLWithPath: backingC))
        #expect(try readPastTheKernelCache(c).get()[4096..<8192].allSatisfy { $0 == 0 })
        // Once an fsync made it durable, its record says so, and the same change is an error.
        try Data(unsynced).write(to: URL(fileURLWithPath: backingC))
        #expect(fsync(fd) == 0)
        var committed = [UInt8](try Data(contentsOf: URL(fileURLWithPath: backingC)))
        #expect(committed[recordOffset..<dataOffset] != unsynced[recordOffset..<dataOffset], "the fsync committed a new record")
        committed.replaceSubrange(position(1), with: [UInt8](repeating: 0, count: 4130))
        try Data(committed).write(to: URL(fileURLWithPath: backingC))
        #expect(isEIO(readPastTheKernelCache(c)), "a zeroed block of a file made durable by fsync")
        // And the record from before that commit, put back, is one too.
        try Data(unsynced).write(to: URL(fileURLWithPath: backingC))
        #expect(isEIO(readPastTheKernelCache(c)), "the record before the fsync put back")
    }

    @Test func tamperedNamesAreErrors() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        try Data([1]).write(to: URL(fileURLWithPath: volume.path("name-one")))
        let backing = backingFiles(volume)[0]
        var characters = Array((backing as NSString).lastPathComponent)
        characters[3] = characters[3] == "A" ? "B" : "A"
        let tampered = volume.backing + "/" + String(characters)
        #expect(rename(backing, tampered) == 0)
        // Fresh mount: no cached entries.
        volume.unmount()
        try volume.mount()
        let directory = try #require(opendir(volume.mountpoint))
        defer { closedir(directory) }
        errno = 0
        var names: [String] = []
        while let entry = readdir(directory) {
            names.append(withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) })
        }
        #expect(errno == EIO, "listing a directory with a tampered name gave \(names), errno \(errno)")
        #expect(access(volume.path("name-one"), F_OK) != 0)
        #expect(errno == ENOENT)
    }

    /// Markers written as content, names, symlink targets and directory names never appear in
    /// any byte of the backing directory.
    @Test func nothingPlainReachesTheBackingDirectory() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let marker = "EPOCHFS-MARKER-7f3a9c"
        try FileManager.default.createDirectory(atPath: volume.path("dir-\(marker)"), withIntermediateDirectories: true)
        try Data((String(repeating: marker, count: 500)).utf8).write(to: URL(fileURLWithPath: volume.path("dir-\(marker)/file-\(marker)")))
        #expect(symlink("target-\(marker)", volume.path("link-\(marker)")) == 0)
        #expect(symlink(String(repeating: marker, count: 150), volume.path("longlink")) == 0)
        #expect(mkfifo(volume.path("fifo-\(marker)"), 0o600) == 0)
        #expect(epochfs_setxattr(volume.path("dir-\(marker)"), "user.\(marker)", marker, UInt(marker.utf8.count), 0) == 0)
        volume.unmount()
        let scan = try run("/bin/grep", ["-r", "-a", "-l", "-e", marker, "-e", "MARKER", volume.backing])
        #expect(scan.status == 1, "marker found in: \(scan.stdout)")
        let names = try run("/usr/bin/find", [volume.backing])
        #expect(!names.stdout.contains("MARKER"))
    }
}

/// Where the file record and block 0 start in a backing file of a 4096-byte-block volume
/// (docs/FORMAT.md §6): two shadow slots of 32 + 4130 bytes, the 512-byte record at the next
/// multiple of 512, then the blocks.
let recordOffset = 8704
let dataOffset = recordOffset + 512
