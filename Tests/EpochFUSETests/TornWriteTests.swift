import Foundation
import Glibc
import Support
import Testing

/// A daemon killed in the middle of a write. SIGKILL ends a pwrite(2) at a page boundary (the
/// kernel stops copying at the next page once the signal is pending), so the write no sync
/// acknowledged can be left torn: an envelope cut where the file ends, or cut short in a hole.
/// What it held was nothing acknowledged: the block reads as the hole it was, with no integrity
/// error, also after a later sync (docs/FORMAT.md §6). Other damage where the last commit covers
/// the block stays an error.
@Suite(.serialized) struct TornWriteTests {
    static let block = 4096, sealed = 4130

    /// Block `index` of the test file's bytes.
    static func content(_ index: Int) -> [UInt8] { (0..<block).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index &* 7 &+ 1) } }

    /// Writes blocks `synced` and fdatasyncs them, writes block `unsynced` (with the file `size`
    /// bytes long first, when given), kills the daemon and unmounts; returns the backing file.
    func killMidWrite(_ volume: MountedVolume, size: Int? = nil, synced: Range<Int>, unsynced: Int) throws -> String {
        let fd = open(volume.path("log"), O_CREAT | O_WRONLY, 0o644)
        try #require(fd >= 0)
        if let size { #expect(ftruncate(fd, off_t(size)) == 0) }
        for index in synced { #expect(pwrite(fd, Self.content(index), Self.block, off_t(index * Self.block)) == Self.block) }
        #expect(fdatasync(fd) == 0)
        #expect(pwrite(fd, Self.content(unsynced), Self.block, off_t(unsynced * Self.block)) == Self.block)
        kill(try #require(volume.daemonPID), SIGKILL)
        close(fd)
        volume.unmount()
        return try #require(backingFiles(volume).first)
    }

    /// The backing offset where block `index`'s envelope starts.
    func stored(_ index: Int) -> Int { dataOffset + index * Self.sealed }

    /// The file reads as `expected`, and the mount counted no authentication failure.
    func expectReads(_ volume: MountedVolume, _ expected: [UInt8], _ what: String) throws {
        switch readThrough(volume.path("log")) {
        case .success(let bytes):
            #expect(bytes.count == expected.count, "\(what): \(bytes.count) bytes, \(expected.count) expected")
            #expect(bytes == expected, "\(what): the bytes differ")
        case .failure(let error):
            Issue.record("\(what): \(error): \(volume.mountLog.suffix(2000))")
        }
        #expect(((try volume.status()["counters"] as? [String: Any])?["authentication_failures"] as? Int) == 0, "\(what)")
    }

    /// After a sync of the file, an unmount and a mount, it still reads as `expected`.
    func expectReadsAfterASync(_ volume: MountedVolume, _ expected: [UInt8]) throws {
        let fd = open(volume.path("log"), O_WRONLY)
        #expect(fd >= 0 && fsync(fd) == 0)
        close(fd)
        volume.unmount()
        try volume.mount()
        try expectReads(volume, expected, "after a sync and a remount")
        let fsck = try volume.epochfs("fsck", volume.backing)
        #expect(fsck.status == 0, "\(fsck.output)")
    }

    @Test func anAppendTornWhereTheFileEndsReadsAsTheHoleItWas() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let file = try killMidWrite(volume, synced: 0..<3, unsynced: 3)
        var info = stat()
        #expect(stat(file, &info) == 0 && Int(info.st_size) == stored(4), "the daemon wrote block 3 before it was killed")
        // The page boundary inside block 3's envelope: the file ends there.
        let cut = (stored(4) - 1) / 4096 * 4096
        #expect(cut > stored(3) + 34 && truncate(file, off_t(cut)) == 0)
        try volume.mount()
        let expected = (0..<3).flatMap(Self.content) + [UInt8](repeating: 0, count: cut - stored(3) - 34)
        try expectReads(volume, expected, "torn append")
        try expectReadsAfterASync(volume, expected)
    }

    @Test func aWriteTornInAHoleReadsAsTheHoleItWas() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let file = try killMidWrite(volume, size: 8 * Self.block, synced: 0..<2, unsynced: 2)
        // What the write did not reach of block 2's envelope, from a page boundary on, is the hole's zeros.
        let boundary = (stored(2) + 4095) / 4096 * 4096
        try zero(file, boundary..<stored(3))
        try volume.mount()
        let expected = (0..<2).flatMap(Self.content) + [UInt8](repeating: 0, count: 6 * Self.block)
        try expectReads(volume, expected, "torn write into a hole")
        try expectReadsAfterASync(volume, expected)
    }

    /// A rewrite of a block no sync acknowledged, torn: what the kill did not reach still holds
    /// the block's earlier (also unacknowledged) envelope. Past the committed size it is the hole
    /// it was; the next sync makes it one, so that it stays so once the size is committed.
    @Test func aRewriteTornPastTheCommittedSizeStaysAHoleAfterASync() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let file = try killMidWrite(volume, synced: 0..<2, unsynced: 2)
        // Bytes of another envelope after the page boundary inside block 2's.
        let boundary = (stored(2) + 4095) / 4096 * 4096
        let fd = open(file, O_WRONLY)
        let other = (boundary..<stored(3)).map { UInt8(truncatingIfNeeded: $0 &* 13 | 1) }
        #expect(pwrite(fd, other, other.count, off_t(boundary)) == other.count)
        close(fd)
        try volume.mount()
        let expected = (0..<2).flatMap(Self.content) + [UInt8](repeating: 0, count: Self.block)
        try expectReads(volume, expected, "torn rewrite")
        try expectReadsAfterASync(volume, expected)
    }

    /// Inside a preallocated range (below the committed size, as an etcd WAL segment is), a block
    /// written since the last sync and rewritten in part, the rewrite torn by the kill where it
    /// was stopped at a page boundary: the block reads as one of the two writes, with no
    /// integrity error, and so after a sync. (Were the rewrite in place, what it did not reach
    /// would hold the first write's envelope: damage, below the committed size.)
    @Test func aRewriteTornBelowTheCommittedSizeReadsAsOneOfItsWrites() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let fd = open(volume.path("log"), O_CREAT | O_WRONLY, 0o644)
        try #require(fd >= 0)
        #expect(ftruncate(fd, off_t(8 * Self.block)) == 0)
        for index in 0..<2 { #expect(pwrite(fd, Self.content(index), Self.block, off_t(index * Self.block)) == Self.block) }
        #expect(fdatasync(fd) == 0)
        let first = Self.content(2), patch = [UInt8](repeating: 0xEE, count: 300)
        #expect(pwrite(fd, first, Self.block, off_t(2 * Self.block)) == Self.block)
        let file = try #require(backingFiles(volume).first)
        let before = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        #expect(pwrite(fd, patch, patch.count, off_t(2 * Self.block + 50)) == patch.count)
        let after = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        kill(try #require(volume.daemonPID), SIGKILL)
        close(fd)
        volume.unmount()
        // The rewrite's pwrite stopped at the first page boundary inside what it changed.
        try #require(before.count == after.count)
        let changed = try #require(after.indices.first { after[$0] != before[$0] })...after.indices.last { after[$0] != before[$0] }!
        let boundary = (changed.lowerBound / 4096 + 1) * 4096
        try #require(boundary <= changed.upperBound, "the rewrite spans a page boundary")
        var torn = after
        torn.replaceSubrange(boundary...changed.upperBound, with: before[boundary...changed.upperBound])
        try Data(torn).write(to: URL(fileURLWithPath: file))
        try volume.mount()
        let synced = (0..<2).flatMap(Self.content), rest = [UInt8](repeating: 0, count: 5 * Self.block)
        var rewritten = first
        rewritten.replaceSubrange(50..<350, with: patch)
        let readable = [synced + first + rest, synced + rewritten + rest]
        switch readThrough(volume.path("log")) {
        case .success(let bytes): #expect(readable.contains(bytes), "read \(bytes.count) bytes, neither write")
        case .failure(let error): Issue.record("\(error): \(volume.mountLog.suffix(2000))")
        }
        #expect(((try volume.status()["counters"] as? [String: Any])?["authentication_failures"] as? Int) == 0)
    }

    /// Damage no crash leaves reads EIO, where the last commit covers the block: the tag of an
    /// unacknowledged block in a committed range zeroed (no 512-byte boundary in the zeros), an
    /// acknowledged block zeroed from a page boundary on, an unacknowledged one with a flipped byte.
    @Test(arguments: ["tag zeroed", "acknowledged zeroed", "flipped"]) func otherDamageIsAnError(_ damage: String) throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let file = try killMidWrite(volume, size: 8 * Self.block, synced: 0..<2, unsynced: 2)
        switch damage {
        case "tag zeroed":
            #expect(stored(3) % 512 > 16)
            try zero(file, (stored(3) - 16)..<stored(3))
        case "acknowledged zeroed":
            try zero(file, (stored(1) + 4095) / 4096 * 4096..<stored(2))
        default:
            let fd = open(file, O_RDWR)
            var byte: UInt8 = 0
            #expect(pread(fd, &byte, 1, off_t(stored(2) + 100)) == 1)
            byte ^= 0x40
            #expect(pwrite(fd, &byte, 1, off_t(stored(2) + 100)) == 1)
            close(fd)
        }
        try volume.mount()
        #expect(isEIO(readThrough(volume.path("log"))), "\(damage): read without an error")
    }

    func zero(_ file: String, _ range: Range<Int>) throws {
        let fd = open(file, O_WRONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        #expect(pwrite(fd, [UInt8](repeating: 0, count: range.count), range.count, off_t(range.lowerBound)) == range.count)
    }
}
