import EpochCheck
import EpochCrypto
import EpochFormat
import EpochHeader
import EpochIO
import EpochStore
import EpochVolume
import Foundation
import Glibc
import Support
import Synchronization
import Testing

/// The volume's anchor (docs/FORMAT.md §3.8) through the volume's own code, no FUSE: each sync
/// raises the backing sequence and the machine's copy; a whole backing dir put back from before
/// a sync is refused, unless accepted once; a round that fails says so and loses nothing.
@Suite struct AnchorTests {
    let keys: KeyFiles
    let directory = TemporaryDirectory()
    var backing: String { directory.path + "/backing" }
    var anchors: String { directory.path + "/anchors" }

    init() throws {
        keys = try KeyFiles(epochs: 1...2)
        _ = try Volume.create(backing: backing, keySource: "file:\(keys.directory.path)/%d.key", epoch: 1, blockSize: 4096)
    }

    func open(accepting: Bool = false, io: any BackingIO = SystemIO()) throws -> LiveVolume {
        try LiveVolume(backing: backing, io: io, anchoring: AnchorOptions(directory: anchors, acceptRollback: accepting))
    }

    /// The backing sequence, read as an independent decoder would.
    func backingSequence(_ volume: LiveVolume) throws -> UInt64 {
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: backing + "/" + VolumeAnchor.fileName)))
        let key = try AnchorRecord.key(nameKey: volume.header.keyring.nameKey, volumeID: volume.header.volumeID)
        return try AnchorRecord.decode(bytes, key: key, volumeID: volume.header.volumeID).sequence
    }

    /// The machine's sequence, from its text.
    func localSequence(_ volume: LiveVolume) throws -> UInt64 {
        let text = try String(contentsOfFile: anchors + "/" + volume.header.volumeID.bytes.hexString, encoding: .utf8)
        #expect(text.hasPrefix("epochfs anchor\nvolume \(volume.header.volumeID.bytes.hexString)\nsequence ") && text.utf8.count == 85)
        return UInt64(text.split(separator: "\n").last!.dropFirst("sequence ".count))!
    }

    func writeAndSync(_ tree: BackingTree, _ name: String, _ bytes: [UInt8]) throws {
        let (handle, file, _) = try tree.create(Array(name.utf8), in: tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { tree.close(handle) }
        _ = try bytes.withUnsafeBytes { try tree.write(file, through: handle, offset: 0, data: $0, caller: 0) }
        try tree.sync(handle, of: file, dataOnly: false)
    }

    @Test func eachSyncRaisesBothAndAnOlderBackingDirIsRefused() throws {
        let snapshot = directory.path + "/snapshot"
        do {
            let volume = try open()
            #expect(volume.anchor?.note?.contains("anchored at sequence 0") == true)
            #expect(try backingSequence(volume) == 0 && localSequence(volume) == 0)
            let tree = try BackingTree(volume: volume)
            try writeAndSync(tree, "a", Array("first".utf8))
            let afterFirst = try backingSequence(volume)
            #expect(try afterFirst >= 1 && localSequence(volume) == afterFirst)
            try FileManager.default.copyItem(atPath: backing, toPath: snapshot)
            try writeAndSync(tree, "b", Array("second".utf8))
            try tree.sync(try tree.openDirectory(tree.root), of: tree.root, dataOnly: false)
            try volume.rekey(to: 2)
            #expect(try backingSequence(volume) == afterFirst + 3, "a file sync, a directory sync and a rekey: a round each")
            #expect(try localSequence(volume) == afterFirst + 3)
        }
        // As it is: opens.
        _ = try open()
        // The copy from before the second sync put back: refused, and nothing written.
        try FileManager.default.removeItem(atPath: backing)
        try FileManager.default.copyItem(atPath: snapshot, toPath: backing)
        let before = try Data(contentsOf: URL(fileURLWithPath: backing + "/" + VolumeAnchor.fileName))
        #expect {
            _ = try open()
        } throws: { error in
            guard case let AnchorError.rolledBack(found, anchored, _) = error else { return false }
            return found != nil && found! < anchored
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: backing + "/" + VolumeAnchor.fileName)) == before)
        // Accepted once; then it opens as any other.
        let accepted = try open(accepting: true)
        #expect(accepted.anchor?.note?.contains("accepted") == true)
        #expect(try localSequence(accepted) == backingSequence(accepted))
        _ = try open()
    }

    @Test func aMissingOrDamagedRecordIsRefusedOnceAnchored() throws {
        do {
            let volume = try open()
            try writeAndSync(try BackingTree(volume: volume), "a", [1, 2, 3])
        }
        var record = Array(try Data(contentsOf: URL(fileURLWithPath: backing + "/" + VolumeAnchor.fileName)))
        record[5] ^= 1
        try Data(record).write(to: URL(fileURLWithPath: backing + "/" + VolumeAnchor.fileName))
        #expect {
            _ = try open()
        } throws: { error in
            guard case AnchorError.damagedRecord = error else { return false }
            return true
        }
        try FileManager.default.removeItem(atPath: backing + "/" + VolumeAnchor.fileName)
        #expect {
            _ = try open()
        } throws: { error in
            guard case let AnchorError.rolledBack(found, anchored, _) = error else { return false }
            return found == nil && anchored >= 1
        }
        #expect(VolumeAnchor.finding(in: try LiveVolume(backing: backing), directory: anchors)?.contains("is missing") == true)
        #expect(try VolumeAnchor.reanchor(try LiveVolume(backing: backing), directory: anchors).contains("accepted"))
        #expect(VolumeAnchor.finding(in: try LiveVolume(backing: backing), directory: anchors) == nil)
        _ = try open()
    }

    /// A round whose backing fdatasync fails fails the sync with that errno and leaves the
    /// machine's copy where it was (never ahead of the durable backing); the next round works.
    /// The same when the machine's own fdatasync fails.
    @Test func aFailedRoundFailsTheSyncAndTheNextOneWorks() throws {
        let io = RecordingIO()
        let volume = try open(io: io)
        let anchor = try #require(volume.anchor)
        try anchor.cover()
        let start = try localSequence(volume)
        io.inject(.fail(EIO), into: .fdatasync)
        #expect(throws: SystemError.self) { try anchor.cover() }
        #expect(try localSequence(volume) == start)
        io.inject(.fail(ENOSPC), into: .fdatasync, nth: 2)
        #expect { try anchor.cover() } throws: { ($0 as? SystemError)?.errno == ENOSPC }
        try anchor.cover()
        #expect(try backingSequence(volume) == start + 3)
        #expect(try localSequence(volume) == start + 3)
    }

    /// Many threads syncing at once share rounds: every cover returns, none fails, and the
    /// sequences end equal, raised by at least one and at most one per caller.
    @Test func concurrentCoversShareRounds() throws {
        let volume = try open()
        let anchor = try #require(volume.anchor)
        let failures = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            do { try anchor.cover() } catch { failures.withLock { $0 += 1 } }
        }
        #expect(failures.withLock { $0 } == 0)
        let raised = try localSequence(volume)
        #expect(try raised >= 1 && raised <= 16 && backingSequence(volume) == raised)
    }
}
