import CLinux
import EpochCrypto
import EpochFormat
import EpochIO
@testable import EpochStore
import EpochSystem
@testable import EpochVolume
import Glibc
import Support
import Testing

/// Reads of file content: small reads, and large ones of cached ranges, go through the backing
/// file's page cache; large reads of uncached ranges read the disk directly (O_DIRECT). All must
/// give the same bytes and the same errors.
@Suite struct ContentReadTests {
    /// A volume with one backing file holding `plain` (written through FileContent).
    struct StoredFile {
        let directory = TemporaryDirectory()
        let content: FileContent
        let fd: Int32
        let plain: [UInt8]

        init(size: Int) throws {
            let keys = try KeyFiles(epochs: 1...1)
            let backing = directory.path + "/backing"
            _ = try Volume.create(backing: backing, keySource: "file:\(keys.directory.path)/%d.key", epoch: 1, blockSize: 4096)
            fd = open(directory.path + "/file", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            var info = stat()
            fstat(fd, &info)
            content = try LiveVolume(backing: backing).content(of: BackingNode.Identity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino)))
            plain = try SecureRandom.bytes(size)
            try plain.withUnsafeBytes { _ = try content.write(fd: FileDescriptor(rawValue: fd), offset: 0, data: $0) }
        }

        func read(offset: Int, count: Int) throws -> [UInt8] {
            try content.read(fd: FileDescriptor(rawValue: fd), offset: offset, count: count) { Array($0) }
        }

        /// Writes the file out and drops it from the page cache.
        func evict() { evictFromCache(fd) }

        func flipByte(at offset: Int) {
            var byte: UInt8 = 0
            #expect(pread(fd, &byte, 1, off_t(offset)) == 1)
            byte ^= 0x40
            #expect(pwrite(fd, &byte, 1, off_t(offset)) == 1)
        }
    }

    @Test(arguments: [false, true]) func smallAndLargeReadsGiveTheStoredBytes(evicted: Bool) throws {
        let file = try StoredFile(size: (1 << 20) + 1234)
        defer { close(file.fd) }
        if evicted { file.evict() }
        let large = FileContent.streamingRequestSize
        for (offset, count) in [(0, large), (4096, 1 << 20), (777, large + 9), ((1 << 20) - 3, large), (5, 2 << 20),
                                (file.plain.count - 10, large), (file.plain.count, large), (0, 4096), (100, 5000), (4095, 2)] {
            let expected = Array(file.plain[min(offset, file.plain.count)..<min(offset + count, file.plain.count)])
            let read = try file.read(offset: offset, count: count)
            #expect(read == expected, "read of \(count) at \(offset)")
        }
    }

    @Test(arguments: [false, true]) func tamperedBlockFailsSmallAndLargeReads(evicted: Bool) throws {
        let file = try StoredFile(size: 512 * 1024)
        defer { close(file.fd) }
        // Acknowledged: a block no sync covered may read as the hole a torn write leaves (FORMAT.md §6).
        try file.content.sync(fd: FileDescriptor(rawValue: file.fd), dataOnly: true)
        let layout = ContentLayout(blockSize: 4096)
        file.flipByte(at: layout.backingOffset(block: 20) + 100)
        if evicted { file.evict() }
        for (offset, count) in [(0, FileContent.streamingRequestSize), (0, 512 * 1024), (20 * 4096, 4096), (19 * 4096 + 7, 8192)] {
            #expect(throws: ContentError.block(index: 20, .authenticationFailed(keyID: 1)), "read of \(count) at \(offset)") {
                _ = try file.read(offset: offset, count: count)
            }
        }
        let before = try file.read(offset: 0, count: 20 * 4096)
        #expect(before == Array(file.plain[0..<(20 * 4096)]), "the blocks before the tampered one still read")
    }

    /// Reads take the backing size from what the last read found until something changes the
    /// file: each write and truncate is seen by the next read, and a cut by someone else
    /// between two reads is an error for what it took, never a shorter file.
    @Test(arguments: [false, true]) func readsSeeEveryChangeAndNoCut(evicted: Bool) throws {
        let file = try StoredFile(size: 8 * 4096)
        defer { close(file.fd) }
        let fd = FileDescriptor(rawValue: file.fd)
        try file.content.sync(fd: fd, dataOnly: true)
        #expect(try file.read(offset: 0, count: 1 << 20) == file.plain)
        let tail = try SecureRandom.bytes(5000)
        try tail.withUnsafeBytes { _ = try file.content.write(fd: fd, offset: file.plain.count, data: $0) }
        #expect(try file.read(offset: 0, count: 1 << 20) == file.plain + tail, "a write that grew the file")
        try file.content.truncate(fd: fd, to: 3 * 4096 + 10)
        #expect(try file.read(offset: 0, count: 1 << 20) == Array(file.plain[0..<(3 * 4096 + 10)]), "a truncate")
        try file.content.truncate(fd: fd, to: 6 * 4096)
        let grown = Array(file.plain[0..<(3 * 4096 + 10)]) + [UInt8](repeating: 0, count: 3 * 4096 - 10)
        #expect(try file.read(offset: 0, count: 1 << 20) == grown)
        try file.content.sync(fd: fd, dataOnly: true)
        #expect(try file.read(offset: 0, count: 1 << 20) == grown)
        if evicted { file.evict() }
        // Cut to 2 whole blocks by someone else: what it took is an error; what is left reads
        // as written or fails (stat of the file fails, TamperTests), never as a shorter file.
        #expect(ftruncate(file.fd, off_t(ContentLayout(blockSize: 4096).backingOffset(block: 2))) == 0)
        for (offset, count) in [(0, 1 << 20), (2 * 4096, 4096), (4096, 4097)] {
            #expect(throws: (any Error).self, "read of \(count) at \(offset)") { _ = try file.read(offset: offset, count: count) }
        }
        if let left = try? file.read(offset: 0, count: 2 * 4096) { #expect(left == Array(grown[0..<(2 * 4096)])) }
    }

    @Test func directReadsOnlyOfUncachedRangesAndNeverPastTheEnd() throws {
        let directory = TemporaryDirectory()
        let bytes = try SecureRandom.bytes(5 * 4096 + 100)
        directory.write(bytes, to: "file")
        let fd = open(directory.path + "/file", O_RDWR | O_CLOEXEC)
        defer { close(fd) }
        // Dirty in the page cache: the page cache serves it.
        let patch: [UInt8] = Array(repeating: 0xA5, count: 300)
        #expect(pwrite(fd, patch, patch.count, 4000) == patch.count)
        #expect(try DirectRead.with(io: SystemIO(), fd: FileDescriptor(rawValue: fd), offset: 0, count: 8192) { $0.count } == nil)

        evictFromCache(fd)
        var expected = bytes
        expected.replaceSubrange(4000..<4300, with: patch)
        for (offset, count) in [(0, 4096), (100, 4 * 4096), (4097, 4 * 4096 + 3), (0, expected.count)] {
            let seen = try DirectRead.with(io: SystemIO(), fd: FileDescriptor(rawValue: fd), offset: offset, count: count) { Array($0) }
            #expect(seen == Array(expected[offset..<(offset + count)]), "direct read of \(count) at \(offset)")
        }
        #expect(throws: SystemError("read", path: "backing file changed size while read", errno: EIO)) {
            try DirectRead.with(io: SystemIO(), fd: FileDescriptor(rawValue: fd), offset: 4096, count: expected.count) { $0.count }
        }
    }
}

/// Large writes start their way to the disk before they return, so that a streaming writer's
/// fsync does not find all of its data still to write; small ones stay in the page cache.
@Suite struct ContentWriteTests {
    @Test func largeWritesLeaveNoDirtyPagesBehind() throws {
        let file = try ContentReadTests.StoredFile(size: 2 << 20)
        defer { close(file.fd) }
        let layout = ContentLayout(blockSize: 4096)
        let blocks = layout.backingOffset(block: 0)..<layout.backingOffset(block: 512)
        let afterLarge = try pageCache(file.fd, blocks)
        #expect(afterLarge.cached > 0 && afterLarge.dirty == 0, "\(afterLarge)")

        let small = try SecureRandom.bytes(1000)
        try small.withUnsafeBytes { _ = try file.content.write(fd: FileDescriptor(rawValue: file.fd), offset: 10 * 4096, data: $0) }
        // (It keeps bytes of a stored block, so its copy goes to a shadow slot, before block 0.)
        #expect(try pageCache(file.fd, 0..<layout.backingOffset(block: 512)).dirty > 0)
    }
}

/// Pages of `range` of the file open at `fd` in the page cache, and how many of them are dirty.
private func pageCache(_ fd: Int32, _ range: Range<Int>) throws -> (cached: UInt64, dirty: UInt64) {
    var cached: UInt64 = 0, dirty: UInt64 = 0
    guard epochfs_page_cache_pages(fd, UInt64(range.lowerBound), UInt64(range.count), &cached, &dirty) == 0 else {
        throw SystemError("cachestat", path: "test file")
    }
    return (cached, dirty)
}

/// Writes the file open at `fd` out and drops its pages from the page cache.
private func evictFromCache(_ fd: Int32) {
    #expect(fsync(fd) == 0)
    #expect(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0)
}
