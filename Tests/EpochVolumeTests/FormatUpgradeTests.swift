import CLinux
import EpochCheck
import EpochFormat
import EpochIO
import EpochStore
import EpochVolume
import Foundation
import Glibc
import Support
import Testing

/// `epochfs upgrade` (FormatUpgrade): a format-3 volume becomes format 4, every directory with
/// a record; a run that fails part-way leaves a format-3 volume that reads as before, and the
/// next run finishes it.
@Suite struct FormatUpgradeTests {
    let keys: KeyFiles
    let directory = TemporaryDirectory()
    var backing: String { directory.path + "/backing" }

    init() throws {
        keys = try KeyFiles(epochs: 1...1)
        _ = try Volume.create(backing: directory.path + "/backing", keySource: "file:\(keys.directory.path)/%d.key", epoch: 1,
                              blockSize: 4096, formatVersion: 3)
        let tree = try BackingTree(volume: try LiveVolume(backing: backing))
        var parent = tree.root
        for name in ["a", "b", "c"] {
            parent = try tree.mkdir(Array(name.utf8), in: parent, mode: 0o755, owner: nil).0
            let (handle, file, _) = try tree.create(Array("f".utf8), in: parent, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
            try Array("in \(name)".utf8).withUnsafeBytes { try tree.write(file, through: handle, offset: 0, data: $0, caller: 0) }
            try tree.sync(handle, of: file, dataOnly: false)
            tree.close(handle)
        }
        try tree.syncAll()
    }

    /// The sizes of the IV files from the root down to c.
    func ivFileSizes() throws -> [Int] {
        var sizes: [Int] = [], path = backing
        while true {
            sizes.append(try FileManager.default.attributesOfItem(atPath: path + "/epochfs.diriv")[.size] as! Int)
            let entries = try FileManager.default.contentsOfDirectory(atPath: path).filter { !$0.hasPrefix("epochfs.") }
            var isDirectory: ObjCBool = false
            guard let sub = entries.first(where: { FileManager.default.fileExists(atPath: path + "/" + $0, isDirectory: &isDirectory) && isDirectory.boolValue })
            else { return sizes }
            path += "/" + sub
        }
    }

    func readAll(_ volume: LiveVolume) throws -> [String] {
        let tree = try BackingTree(volume: volume)
        var node = tree.root, found: [String] = []
        for name in ["a", "b", "c"] {
            node = try tree.lookup(Array(name.utf8), in: node).0
            let file = try tree.lookup(Array("f".utf8), in: node).0
            let handle = try tree.open(file, flags: O_RDONLY, caller: 0)
            defer { tree.close(handle) }
            found.append(String(decoding: try tree.read(file, through: handle, offset: 0, count: 100) { Array($0) }, as: UTF8.self))
        }
        return found
    }

    @Test func aFailedRunLeavesFormat3AndTheNextOneFinishes() throws {
        #expect(try ivFileSizes() == [16, 16, 16, 16])
        let io = RecordingIO()
        io.inject(.fail(ENOSPC), into: .renameat, nth: 3)
        #expect(throws: SystemError.self) { _ = try FormatUpgrade.run(try LiveVolume(backing: backing, io: io)) }
        let half = try LiveVolume(backing: backing)
        #expect(half.header.slot.formatVersion == 3)
        #expect(try ivFileSizes().filter { $0 > 16 }.count == 2, "two directories done before the failure")
        #expect(try readAll(half) == ["in a", "in b", "in c"], "format 3 reads IV files with or without a record")

        let result = try FormatUpgrade.run(try LiveVolume(backing: backing))
        #expect(result.header.slot.formatVersion == 5 && result.directories == 2 && result.alreadyDone == 2)
        // 16-byte IV, then the record: 48 bytes of fields (with the attribute binding), nonce, tag.
        #expect(try ivFileSizes() == [92, 92, 92, 92])
        let upgraded = try LiveVolume(backing: backing)
        #expect(try readAll(upgraded) == ["in a", "in b", "in c"])
        #expect(try FormatUpgrade.run(upgraded).directories == 0, "a format-5 volume is left alone")
    }
}
