import CLinux
import EpochFormat
import EpochIO
import EpochStore
import EpochVolume
import Foundation
import Glibc
import Support
import Testing

/// The volume's tree without FUSE, as offline commands use it, over the recording test double.
@Suite struct BackingTreeTests {
    let io = RecordingIO()
    let volume: OfflineVolume
    var tree: BackingTree { volume.tree }
    var directory: TemporaryDirectory { volume.directory }

    init() throws { volume = try OfflineVolume(epochs: 1...2, io: io) }

    func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    func names(_ directory: BackingNode, in tree: BackingTree? = nil) throws -> [String] {
        let tree = tree ?? self.tree
        let handle = try tree.openDirectory(directory)
        defer { tree.close(handle) }
        return try tree.listing(of: directory, through: handle).map { String(decoding: $0.name, as: UTF8.self) }.sorted()
    }

    func write(_ text: String, to node: BackingNode, at offset: Int? = 0) throws {
        let handle = try tree.open(node, flags: O_RDWR, caller: 0)
        defer { tree.close(handle) }
        try bytes(text).withUnsafeBytes { try tree.write(node, through: handle, offset: offset, data: $0, caller: 0) }
    }

    func read(_ node: BackingNode, in tree: BackingTree? = nil) throws -> String {
        let tree = tree ?? self.tree
        let handle = try tree.open(node, flags: O_RDONLY, caller: 0)
        defer { tree.close(handle) }
        return try tree.read(node, through: handle, offset: 0, count: 1 << 20) { String(decoding: $0, as: UTF8.self) }
    }

    @Test func entriesByPlaintextNameWithLongNamesSymlinksAndLinks() throws {
        let long = String(repeating: "n", count: 240)
        let (sub, _) = try tree.mkdir(bytes("sub"), in: tree.root, mode: 0o755, owner: nil)
        let (handle, file, _) = try tree.create(bytes(long), in: sub, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o640, owner: nil)
        tree.close(handle)
        try write("hello, tree", to: file)
        _ = try tree.symlink(bytes("../" + long), named: bytes("link"), in: tree.root, owner: nil)
        _ = try tree.link(file, as: bytes("hard"), in: tree.root)
        #expect(try names(tree.root) == ["hard", "link", "sub"])
        #expect(try names(sub) == [long])

        let (found, info) = try tree.lookup(bytes(long), in: sub)
        #expect(found.identity == file.identity && info.st_size == 11 && info.st_mode & 0o777 == 0o640)
        #expect(try read(try tree.lookup(bytes("hard"), in: tree.root).0) == "hello, tree")
        #expect(try tree.readlink(try tree.lookup(bytes("link"), in: tree.root).0) == bytes("../" + long))

        try tree.rename(bytes(long), in: sub, to: bytes("short"), in: tree.root, flags: 0)
        #expect(try names(sub) == [])
        #expect(try names(tree.root) == ["hard", "link", "short", "sub"])
        #expect(throws: SystemError.self) { try tree.lookup(bytes(long), in: sub) }
        let backingNames = try FileManager.default.contentsOfDirectory(atPath: directory.path + "/backing/" + backingName(of: sub))
        #expect(backingNames == ["epochfs.diriv"], "the long name's side file went with the rename")
        try tree.rmdir(bytes("sub"), in: tree.root)
        try tree.unlink(bytes("short"), in: tree.root)
        #expect(try names(tree.root) == ["hard", "link"])
        #expect(try read(try tree.lookup(bytes("hard"), in: tree.root).0) == "hello, tree")
    }

    @Test func mkdirWritesTheDirectoryIVThroughTheBackingIO() throws {
        io.clearRecording()
        _ = try tree.mkdir(bytes("d"), in: tree.root, mode: 0o755, owner: nil)
        let made = try #require(io.calls(.mkdirat).first).path
        let stored = io.calls.filter { [.mkdirat, .open, .pwrite].contains($0.kind) && $0.path.hasPrefix(made) }
        // The directory, its IV written, the IV open (read-only) until the next fsync, the entry.
        #expect(stored.map(\.kind) == [.mkdirat, .open, .open, .pwrite, .open, .open])
        let iv = made + "/epochfs.diriv"
        #expect(stored.map(\.path) == [made, made, iv, iv, iv, made])
        // The IV and an empty record binding no attribute (format 5), in one write.
        #expect(stored[3].bytes?.count == DirectoryIV.size + DirectoryRecord.minSize + AttributeBinding.size && stored[3].offset == 0)
    }

    @Test func sideFilesAreDurableBeforeAnyFsyncIsAcknowledged() throws {
        let (sub, _) = try tree.mkdir(bytes("sub"), in: tree.root, mode: 0o755, owner: nil)
        let subPath = try #require(io.calls(.mkdirat).last).path
        let long = String(repeating: "x", count: 200)
        let (handle, file, _) = try tree.create(bytes(long), in: sub, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { tree.close(handle) }
        let sideFile = try #require(io.calls(.open).first { $0.path.hasSuffix(".name") }).path
        io.clearRecording()
        try tree.sync(handle, of: file, dataOnly: true)
        let syncs = io.calls.filter { [.fsync, .fdatasync].contains($0.kind) }.map { "\($0.kind) \($0.path)" }
        // The new directory's IV and the long name's side file, each with its directory, then the file.
        #expect(syncs.dropLast() == ["fsync \(subPath)/epochfs.diriv", "fsync \(subPath)", "fsync \(sideFile)", "fsync \(subPath)"])
        #expect(syncs.last?.hasPrefix("fdatasync \(subPath)/epochfs.long.") == true, "\(syncs)")

        // Durable once: the next fsync has nothing more to do first. The root's commit then
        // writes its record (it now holds `sub`) after the directory's fsync; a second one
        // finds nothing new and writes none.
        io.clearRecording()
        let rootHandle = try tree.openDirectory(tree.root)
        defer { tree.close(rootHandle) }
        try tree.sync(rootHandle, of: tree.root, dataOnly: false)
        let commit = io.calls.filter { [.fsync, .fdatasync, .syncfs].contains($0.kind) }
        #expect(commit.map(\.kind) == [.fsync, .fdatasync] && commit.last?.path.hasSuffix(DirectoryIV.pendingName) == true)
        io.clearRecording()
        try tree.sync(rootHandle, of: tree.root, dataOnly: false)
        #expect(io.calls.filter { [.fsync, .fdatasync, .syncfs].contains($0.kind) }.map(\.kind) == [.fsync])
    }

    @Test func manySideFilesWithoutAnFsyncTakeOneSyncfs() throws {
        for index in 0..<300 { _ = try tree.mkdir(bytes("d\(index)"), in: tree.root, mode: 0o755, owner: nil) }
        #expect(io.calls(.syncfs).count == 1)
        #expect(io.calls(.fsync).isEmpty)
        io.clearRecording()
        let rootHandle = try tree.openDirectory(tree.root)
        defer { tree.close(rootHandle) }
        try tree.sync(rootHandle, of: tree.root, dataOnly: false)
        #expect(io.calls(.syncfs).count == 1, "the 43 since then: one more syncfs")
    }

    @Test(arguments: [0, -1]) func aDirectoryWhoseIVWasLostIsNotBricked(ivSize: Int) throws {
        _ = try tree.mkdir(bytes("empty"), in: tree.root, mode: 0o755, owner: nil)
        do { // no node of `full` outlives this: what is known of a directory goes with its nodes
            let (full, _) = try tree.mkdir(bytes("full"), in: tree.root, mode: 0o755, owner: nil)
            _ = try tree.mkdir(bytes("inside"), in: full, mode: 0o755, owner: nil)
        }
        // What a power cut can leave of IV files never fsync'd: empty (ivSize 0) or missing.
        for call in io.calls(.mkdirat) where !call.path.hasSuffix("/inside") {
            let iv = call.path + "/epochfs.diriv"
            if ivSize < 0 { try FileManager.default.removeItem(atPath: iv) } else { #expect(truncate(iv, off_t(ivSize)) == 0) }
        }
        let fresh = try BackingTree(volume: tree.volume) // nothing cached from before
        let (empty, _) = try fresh.lookup(bytes("empty"), in: fresh.root)
        #expect(try names(empty, in: fresh) == [])
        try fresh.rmdir(bytes("empty"), in: fresh.root)
        let (broken, _) = try fresh.lookup(bytes("full"), in: fresh.root)
        #expect(throws: SystemError.self) { try names(broken, in: fresh) }
        #expect(throws: SystemError.self) { try fresh.lookup(bytes("inside"), in: broken) }
        #expect(try names(fresh.root, in: fresh) == ["full"])
    }

    /// Space is reserved for what is written, not for the gap before it: sparse files stay sparse.
    @Test func writesAndFallocatesFarPastTheEndLeaveTheGapAHole() throws {
        for (index, operation) in ["write", "fallocate", "fallocate keep size"].enumerated() {
            let (handle, file, _) = try tree.create(bytes("sparse\(index)"), in: tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
            defer { tree.close(handle) }
            try write("head", to: file)
            let farAway = 64 << 20
            switch operation {
            case "write": try write("tail", to: file, at: farAway)
            case "fallocate": try tree.allocate(file, through: handle, mode: 0, offset: farAway, length: 4096, caller: 0)
            default: try tree.allocate(file, through: handle, mode: epochfs_FALLOC_FL_KEEP_SIZE, offset: farAway, length: 4096, caller: 0)
            }
            let allocated = Int(try SystemIO().fstat(handle).st_blocks) * 512
            #expect(allocated < 64 * 1024, "\(operation): \(allocated) bytes allocated")
        }
    }

    @Test(arguments: [ENOSPC, EDQUOT, EIO, EROFS])
    func aFailedBackingWriteReachesTheWriterAsItsErrno(errno: Int32) throws {
        let (handle, file, _) = try tree.create(bytes("f"), in: tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        tree.close(handle)
        try write("first", to: file)
        io.inject(.fail(errno), into: .pwrite)
        #expect(throws: SystemError("pwrite", path: directory.path + "/backing/" + (try backingName(of: file)), errno: errno)) {
            try write(" second", to: file, at: nil)
        }
        #expect(try read(file) == "first")
    }

    /// An append after a sync puts the last block's new copy in a shadow slot, then grows the
    /// file: either step failing leaves the synced content as it was, and nothing is lost for
    /// the next write.
    @Test(arguments: [RecordingIO.Kind.pwrite, .ftruncate])
    func aFailedWriteThroughASlotLeavesTheFileAsItWas(failing kind: RecordingIO.Kind) throws {
        let (handle, file, _) = try tree.create(bytes("log"), in: tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { tree.close(handle) }
        try bytes("first").withUnsafeBytes { try tree.write(file, through: handle, offset: 0, data: $0, caller: 0) }
        try tree.sync(handle, of: file, dataOnly: true)
        io.clearRecording()
        io.inject(.fail(EIO), into: kind)
        #expect(throws: SystemError.self) {
            try bytes(" second").withUnsafeBytes { try tree.write(file, through: handle, offset: nil, data: $0, caller: 0) }
        }
        #expect(io.calls(.pwrite).first.map { $0.offset == 0 } == true, "the new copy went to slot 0, not in place")
        #expect(try read(file) == "first")
        try bytes(" third").withUnsafeBytes { try tree.write(file, through: handle, offset: nil, data: $0, caller: 0) }
        #expect(try read(file) == "first third")
    }

    /// The record written after a sync fails (docs/FORMAT.md §6.2): the sync reports it, the
    /// data that sync made durable reads back (the older record on disk claims no more than it
    /// did), a volume opened afresh raises no integrity error, and the next sync commits.
    @Test func aFailedRecordWriteAfterASyncLosesNothingAndRaisesNoAlarm() throws {
        let (handle, file, _) = try tree.create(bytes("log"), in: tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { tree.close(handle) }
        try bytes("first").withUnsafeBytes { try tree.write(file, through: handle, offset: 0, data: $0, caller: 0) }
        try tree.sync(handle, of: file, dataOnly: true)
        try bytes(" second").withUnsafeBytes { try tree.write(file, through: handle, offset: nil, data: $0, caller: 0) }
        io.clearRecording()
        io.inject(.fail(EIO), into: .pwrite)
        #expect(throws: SystemError.self) { try tree.sync(handle, of: file, dataOnly: true) }
        #expect(io.calls(.pwrite).first.map { $0.offset == 8704 && $0.length == 512 } == true, "the failed write was the record's")
        io.removeFaults()
        let reopened = try BackingTree(volume: try LiveVolume(backing: directory.path + "/backing",
                                                              keySourceOverride: "file:\(volume.keys.directory.path)/%d.key"))
        #expect(try read(try reopened.lookup(bytes("log"), in: reopened.root).0, in: reopened) == "first second")
        try bytes(" third").withUnsafeBytes { try tree.write(file, through: handle, offset: nil, data: $0, caller: 0) }
        try tree.sync(handle, of: file, dataOnly: true)
        #expect(try read(file) == "first second third")
    }

    /// The backing name of `node` in the backing root (or `sub`'s).
    private func backingName(of node: BackingNode) throws -> String {
        let path = String(decoding: try SystemIO().readlinkat(SystemIO.procPath(node.fd), in: .currentDirectory), as: UTF8.self)
        return String(path.dropFirst(directory.path.count + "/backing/".count))
    }
}
