import EpochIO
import Foundation
import Glibc
import Support
import Testing

/// The backing-I/O test double: what it records, and each fault it injects, against the real
/// file system underneath.
@Suite struct RecordingIOTests {
    let directory = TemporaryDirectory()
    let io = RecordingIO()

    func contents(_ name: String) -> [UInt8] { Array(FileManager.default.contents(atPath: directory.path + "/" + name) ?? Data()) }

    @Test func recordsEveryCallInOrderWithItsArgumentsAndResult() throws {
        let root = try io.open(directory.path, in: .currentDirectory, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC, mode: 0)
        let file = try io.open("a", in: root, flags: O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600)
        #expect(try Array("hello".utf8).withUnsafeBytes { try io.pwrite(file, $0, at: 3) } == 5)
        try io.fdatasync(file)
        try io.ftruncate(file, size: 4)
        try io.renameat("a", in: root, to: "b", in: root, flags: 0)
        #expect(throws: SystemError.self) { try io.unlinkat("a", in: root, removeDirectory: false) }
        io.close(file)
        io.close(root)

        let calls = io.calls
        #expect(calls.map(\.kind) == [.open, .open, .pwrite, .fdatasync, .ftruncate, .renameat, .unlinkat, .close, .close])
        let a = directory.path + "/a", b = directory.path + "/b"
        #expect(calls[1].path == a && calls[1].result.map { $0 >= 0 } == .success(true))
        #expect(calls[2].path == a && calls[2].offset == 3 && calls[2].length == 5)
        #expect(calls[2].bytes == Array("hello".utf8) && calls[2].result == .success(5))
        #expect(calls[3].path == a)
        #expect(calls[4].length == 4)
        #expect(calls[5].path == a && calls[5].other == b)
        #expect(calls[6].errno == ENOENT)
        #expect(calls[7].path == b, "a descriptor is named by where the file is now")
        #expect(contents("b") == [0, 0, 0, 0x68])
    }

    @Test(arguments: [ENOSPC, EDQUOT, EIO, EROFS])
    func aFailedWriteReturnsItsErrnoAndWritesNothing(errno: Int32) throws {
        directory.write(Array("before".utf8), to: "f")
        let file = try io.open(directory.path + "/f", in: .currentDirectory, flags: O_RDWR | O_CLOEXEC, mode: 0)
        defer { io.close(file) }
        io.inject(.fail(errno), into: .pwrite)
        #expect(throws: SystemError("pwrite", path: directory.path + "/f", errno: errno)) {
            try io.pwriteFully(file, Array("AFTER!".utf8), at: 0)
        }
        #expect(contents("f") == Array("before".utf8))
        #expect(io.calls(.pwrite).map(\.errno) == [errno])
        try io.pwriteFully(file, Array("AFTER!".utf8), at: 0)
        #expect(contents("f") == Array("AFTER!".utf8), "only the first write after the plan fails")
    }

    @Test func theNthCallOfAKindFailsAndWithAndAfterEveryLaterOne() throws {
        let file = try io.open(directory.path + "/f", in: .currentDirectory, flags: O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600)
        defer { io.close(file) }
        io.inject(.fail(EIO), into: .fsync, nth: 2)
        try io.fsync(file)
        #expect(throws: SystemError.self) { try io.fsync(file) }
        try io.fsync(file)
        try io.fdatasync(file) // another kind: not counted
        io.inject(.fail(ENOSPC), into: .fallocate, nth: 2, andAfter: true)
        try io.fallocate(file, mode: 0, offset: 0, length: 4096)
        for _ in 0..<3 { #expect(throws: SystemError.self) { try io.fallocate(file, mode: 0, offset: 0, length: 8192) } }
        #expect(io.calls(.fsync).map(\.errno) == [nil, EIO, nil])
        #expect(io.calls(.fallocate).map(\.errno) == [nil, ENOSPC, ENOSPC, ENOSPC])
        #expect(try io.size(file) == 4096)
        io.removeFaults()
        try io.fallocate(file, mode: 0, offset: 0, length: 8192)
        #expect(try io.size(file) == 8192)
    }

    @Test func aShortWriteWritesItsPrefixAndTheFullWriteGoesOn() throws {
        let file = try io.open(directory.path + "/f", in: .currentDirectory, flags: O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600)
        defer { io.close(file) }
        let bytes = Array("0123456789".utf8)
        io.inject(.writePrefix(3), into: .pwrite)
        #expect(try bytes.withUnsafeBytes { try io.pwrite(file, $0, at: 0) } == 3)
        #expect(contents("f") == Array("012".utf8))

        io.inject(.writePrefix(4), into: .pwrite)
        try io.pwriteFully(file, bytes, at: 10)
        #expect(contents("f") == Array("012\0\0\0\0\0\0\0".utf8) + bytes)
        let writes = io.calls(.pwrite)
        #expect(writes.map(\.offset) == [0, 10, 14])
        #expect(writes.map(\.bytes) == [Array("012".utf8), Array("0123".utf8), Array("456789".utf8)])
        #expect(writes.map(\.result) == [.success(3), .success(4), .success(6)])
    }
}
