import CLinux
import EpochCheck
import EpochFormat
import EpochStore
import EpochVolume
import Foundation
import Glibc
import Support
import Testing

/// Directory records (docs/FORMAT.md §5.6) against changes made in the backing directory
/// between two opens: each kind the issue lists is an error on the path that reads it, and
/// what the volume did itself (or never committed) is not.
@Suite struct DirectoryIntegrityTests {
    let volume: OfflineVolume
    var tree: BackingTree { volume.tree }
    let d: BackingNode

    init() throws {
        let volume = try OfflineVolume(epochs: 1...2)
        self.volume = volume
        d = try volume.tree.mkdir(Array("d".utf8), in: volume.tree.root, mode: 0o755, owner: nil).0
        for (name, size) in [("a", 5000), ("b", 100)] { try file(name, size: size) }
        _ = try tree.symlink(bytes("a"), named: bytes("s"), in: d, owner: nil)
        _ = try tree.mkdir(bytes("sub"), in: d, mode: 0o755, owner: nil)
        try commit(d)
    }

    func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// A file of `size` random bytes in d, fsync'd.
    @discardableResult
    func file(_ name: String, size: Int) throws -> [UInt8] {
        let (handle, node, _) = try tree.create(bytes(name), in: d, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { tree.close(handle) }
        let content = (0..<size).map { _ in UInt8.random(in: 0...255) }
        try content.withUnsafeBytes { try tree.write(node, through: handle, offset: 0, data: $0, caller: 0) }
        try tree.sync(handle, of: node, dataOnly: false)
        return content
    }

    func commit(_ directory: BackingNode, in tree: BackingTree? = nil) throws {
        let tree = tree ?? self.tree
        let handle = try tree.openDirectory(directory)
        defer { tree.close(handle) }
        try tree.sync(handle, of: directory, dataOnly: false)
    }

    /// The backing path of d's entry `name`.
    func backingPath(_ name: String) throws -> String {
        let handle = try tree.openDirectory(d)
        defer { tree.close(handle) }
        let entry = try #require(try tree.listing(of: d, through: handle).first { $0.name == bytes(name) })
        return try backingD() + "/" + entry.backingName
    }

    func backingD() throws -> String {
        let root = volume.directory.path + "/backing"
        let handle = try tree.openDirectory(tree.root)
        defer { tree.close(handle) }
        return root + "/" + (try #require(try tree.listing(of: tree.root, through: handle).first { $0.name == bytes("d") })).backingName
    }

    /// The volume opened again, as the next mount would, and d in it.
    func reopened() throws -> (BackingTree, BackingNode) {
        let tree = try BackingTree(volume: try LiveVolume(backing: volume.directory.path + "/backing",
                                                          keySourceOverride: "file:\(volume.keys.directory.path)/%d.key"))
        return (tree, try tree.lookup(bytes("d"), in: tree.root).0)
    }

    func listing(_ tree: BackingTree, _ directory: BackingNode) throws -> [String] {
        let handle = try tree.openDirectory(directory)
        defer { tree.close(handle) }
        return try tree.listing(of: directory, through: handle).map { String(decoding: $0.name, as: UTF8.self) }.sorted()
    }

    func isDirectoryError(_ body: () throws -> Void) -> Bool {
        do {
            try body()
            return false
        } catch {
            return error is DirectoryError
        }
    }

    @Test func twoEntriesSwappedAreErrors() throws {
        let (a, b) = (try backingPath("a"), try backingPath("b"))
        try FileManager.default.moveItem(atPath: a, toPath: a + ".x")
        try FileManager.default.moveItem(atPath: b, toPath: a)
        try FileManager.default.moveItem(atPath: a + ".x", toPath: b)
        let (tree, d) = try reopened()
        #expect(isDirectoryError { _ = try tree.lookup(bytes("a"), in: d) })
        #expect(isDirectoryError { _ = try tree.lookup(bytes("b"), in: d) })
        #expect(try listing(tree, d) == ["a", "b", "s", "sub"], "every committed name is there: the listing itself holds")
    }

    @Test func aFileSwappedWithASymlinkOrDirectoryIsAnError() throws {
        let (a, s) = (try backingPath("a"), try backingPath("s"))
        try FileManager.default.moveItem(atPath: a, toPath: a + ".x")
        try FileManager.default.moveItem(atPath: s, toPath: a)
        try FileManager.default.moveItem(atPath: a + ".x", toPath: s)
        let (tree, d) = try reopened()
        #expect(isDirectoryError { _ = try tree.lookup(bytes("a"), in: d) })
        #expect(isDirectoryError { _ = try tree.lookup(bytes("s"), in: d) })
    }

    @Test(arguments: ["a", "s", "sub"]) func aDeletedOrMovedEntryIsAnError(name: String) throws {
        let path = try backingPath(name)
        let elsewhere = volume.directory.path + "/backing/" + URL(fileURLWithPath: path).lastPathComponent
        try FileManager.default.moveItem(atPath: path, toPath: elsewhere) // into the root, IV and all
        let (tree, d) = try reopened()
        #expect(isDirectoryError { _ = try tree.lookup(bytes(name), in: d) })
        #expect(isDirectoryError { _ = try listing(tree, d) })
        // The same once deleted outright.
        try FileManager.default.removeItem(atPath: elsewhere)
        let (again, d2) = try reopened()
        #expect(isDirectoryError { _ = try listing(again, d2) })
    }

    @Test func anOlderSymlinkPutBackIsAnError() throws {
        let old = try FileManager.default.destinationOfSymbolicLink(atPath: try backingPath("s"))
        try tree.unlink(bytes("s"), in: d)
        _ = try tree.symlink(bytes("b"), named: bytes("s"), in: d, owner: nil)
        try commit(d)
        let path = try backingPath("s")
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: old)
        let (tree, d) = try reopened()
        #expect(isDirectoryError { _ = try tree.lookup(bytes("s"), in: d) })
    }

    @Test func aFileCutToNothingIsAnError() throws {
        truncate(try backingPath("a"), 0)
        let (tree, d) = try reopened()
        #expect(isDirectoryError { _ = try tree.lookup(bytes("a"), in: d) })
    }

    /// An older copy of a whole file (record, slots and blocks together) put back under its
    /// name: its record's sequence is below the one d's last commit found durable. The file is
    /// held open through the commit, as a mount holds a log it appends to.
    @Test func anOlderCopyOfAWholeFileIsAnError() throws {
        let (handle, node, _) = try tree.create(bytes("w"), in: d, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        func append(_ count: Int) throws {
            let at = Int(try tree.attributes(of: node).st_size)
            try [UInt8](repeating: 7, count: count).withUnsafeBytes { try tree.write(node, through: handle, offset: at, data: $0, caller: 0) }
            try tree.sync(handle, of: node, dataOnly: true)
        }
        try append(100)
        let path = try backingPath("w")
        let older = try Data(contentsOf: URL(fileURLWithPath: path))
        try append(100)
        try append(100)
        try commit(d)
        tree.close(handle)
        try older.write(to: URL(fileURLWithPath: path))
        let (opened, dir) = try reopened()
        #expect(isDirectoryError { _ = try opened.lookup(bytes("w"), in: dir) })
        #expect(try opened.lookup(bytes("a"), in: dir).1.st_size == 5000, "the other names read as before")
    }

    /// An older copy of a whole directory (its IV file with its record, and its entries) put
    /// back under its name: its record's sequence is below the one d's last commit found
    /// durable. The directory is held through the commits, as a mount holds a WAL directory.
    @Test func anOlderCopyOfAWholeDirectoryIsAnError() throws {
        let sub = try tree.lookup(bytes("sub"), in: d).0
        func add(_ name: String) throws {
            let (handle, _, _) = try tree.create(bytes(name), in: sub, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
            tree.close(handle)
            try commit(sub)
        }
        try add("x")
        let path = try backingPath("sub")
        let copy = volume.directory.path + "/sub-copy"
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        try add("y")
        try add("z")
        try commit(d)
        withExtendedLifetime(sub) {}
        let (current, dir) = try reopened()
        #expect(try current.lookup(bytes("sub"), in: dir).1.st_mode & S_IFMT == S_IFDIR, "as committed: no error")
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: copy, toPath: path)
        let (opened, older) = try reopened()
        #expect(throws: DirectoryError.self) { _ = try opened.lookup(bytes("sub"), in: older) }
        #expect(try opened.lookup(bytes("a"), in: older).1.st_size == 5000, "the other names read as before")
    }

    /// What the volume did itself, and names never committed, raise nothing: removals and
    /// renames through the tree let go first, a file emptied and written again keeps its id,
    /// and an entry made after the last commit may vanish as a power cut would take it.
    @Test func theVolumesOwnChangesAndUncommittedNamesRaiseNothing() throws {
        try tree.unlink(bytes("b"), in: d)
        try tree.rename(bytes("a"), in: d, to: bytes("a2"), in: d, flags: 0)
        try tree.rmdir(bytes("sub"), in: d)
        let (handle, node, _) = try tree.create(bytes("a2"), in: d, flags: O_RDWR | O_CREAT | O_TRUNC, mode: 0o600, owner: nil)
        try [UInt8]([1, 2, 3]).withUnsafeBytes { try tree.write(node, through: handle, offset: 0, data: $0, caller: 0) }
        try tree.sync(handle, of: node, dataOnly: false)
        tree.close(handle)
        try file("new", size: 10)
        try FileManager.default.removeItem(atPath: try backingPath("new"))
        let (opened, dir) = try reopened()
        #expect(try listing(opened, dir) == ["a2", "s"])
        let a2 = try opened.lookup(bytes("a2"), in: dir).0
        let read = try opened.open(a2, flags: O_RDONLY, caller: 0)
        defer { opened.close(read) }
        #expect(try opened.read(a2, through: read, offset: 0, count: 10) { Array($0) } == [1, 2, 3])
        #expect((try? opened.lookup(bytes("new"), in: dir)) == nil)
    }

    @Test func aDamagedOrCutRecordIsAnError() throws {
        let iv = try backingD() + "/epochfs.diriv"
        var stored = try [UInt8](Data(contentsOf: URL(fileURLWithPath: iv)))
        stored[20] ^= 1
        chmod(iv, 0o640)
        try Data(stored).write(to: URL(fileURLWithPath: iv))
        let (damaged, inDamaged) = try reopened()
        #expect(isDirectoryError { _ = try listing(damaged, inDamaged) })
        truncate(iv, 16)
        let (cut, inCut) = try reopened()
        #expect(isDirectoryError { _ = try listing(cut, inCut) })
        #expect(isDirectoryError { _ = try cut.lookup(bytes("a"), in: inCut) }) // the IV alone is refused
    }

    /// fsck names the entry and the reason; --repair re-anchors to what is there, after which
    /// the directory reads again and the scan is clean.
    @Test func fsckReportsAndRepairReanchors() throws {
        try FileManager.default.removeItem(atPath: try backingPath("b"))
        let (tree, d) = try reopened()
        var problems: [ScanItem] = []
        _ = try VolumeScan.run(tree, visit: { if $0.problem != nil { problems.append($0) } })
        #expect(problems.map(\.kind) == [.directoryRecord])
        #expect("\(problems.first?.problem.map { "\($0)" } ?? "")".contains("is missing"))
        let (done, left) = VolumeRepair.run(problems, in: tree)
        #expect(left.isEmpty && done.count == 1 && done[0].contains("re-anchored"), "\(done) \(left)")
        #expect(try listing(tree, d) == ["a", "s", "sub"])
        let (again, _) = try reopened()
        #expect(try VolumeScan.run(again).isClean)
    }
}

/// Format 4 keeps an emptied file's record (docs/FORMAT.md §6, truncate to zero): the file
/// reads and takes writes as any empty file, synced or not, after a reopen too.
@Suite struct EmptiedFileTests {
    @Test(arguments: [false, true]) func aFileTruncatedToZeroTakesWritesAnywhere(syncedFirst: Bool) throws {
        let volume = try OfflineVolume(epochs: 1...1)
        let tree = volume.tree
        let (handle, node, _) = try tree.create(Array("f".utf8), in: tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { tree.close(handle) }
        let first = [UInt8](repeating: 1, count: 10_000)
        try first.withUnsafeBytes { try tree.write(node, through: handle, offset: 0, data: $0, caller: 0) }
        if syncedFirst { try tree.sync(handle, of: node, dataOnly: true) }
        try tree.truncate(node, to: 0, through: handle, caller: 0)
        #expect(try tree.attributes(of: node).st_size == 0)
        let patch = [UInt8](repeating: 2, count: 76)
        try patch.withUnsafeBytes { try tree.write(node, through: handle, offset: 6600, data: $0, caller: 0) }
        let expected = [UInt8](repeating: 0, count: 6600) + patch
        #expect(try tree.read(node, through: handle, offset: 0, count: 10_000) { Array($0) } == expected)
        try tree.sync(handle, of: node, dataOnly: true)
        let again = try tree.open(node, flags: O_RDWR, caller: 0)
        defer { tree.close(again) }
        #expect(try tree.read(node, through: again, offset: 0, count: 10_000) { Array($0) } == expected)
    }
}
