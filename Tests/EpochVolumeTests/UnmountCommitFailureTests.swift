import EpochCheck
import EpochIO
import EpochStore
import EpochVolume
import Glibc
import Support
import Testing

/// The unmount's commit when one item's commit fails: the others are committed, the failure is
/// counted, and nothing is lost or raises an alarm (the data was durable before the commits).
struct UnmountCommitFailureTests {
    @Test(arguments: [EIO, ENOSPC])
    func aFailedCommitIsCountedAndTheOthersGoOn(errno: Int32) throws {
        let io = RecordingIO()
        let volume = try OfflineVolume(epochs: 1...1, io: io)
        let tree = volume.tree
        var contents: [String: [UInt8]] = [:]
        for (name, size) in [("a", 9000), ("b", 100), ("c", 5000)] {
            let (handle, file, _) = try tree.create(Array(name.utf8), in: tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
            defer { tree.close(handle) }
            let bytes = (0..<size).map { _ in UInt8.random(in: 0...255) }
            try bytes.withUnsafeBytes { try tree.write(file, through: handle, offset: 0, data: $0, caller: 0) }
            contents[name] = bytes
        }
        try tree.syncAll()
        // The first record written (a file's, after its fdatasync) fails.
        io.clearRecording()
        io.inject(.fail(errno), into: .pwrite)
        let (committed, failed) = try tree.commitUncommitted()
        #expect(committed == 3 && failed == 1, "two files and the root committed, one file not")
        #expect(io.calls(.pwrite).first?.errno == errno)

        let reopened = try BackingTree(volume: try LiveVolume(backing: volume.directory.path + "/backing"))
        for (name, bytes) in contents {
            let node = try reopened.lookup(Array(name.utf8), in: reopened.root).0
            let handle = try reopened.open(node, flags: O_RDONLY, caller: 0)
            defer { reopened.close(handle) }
            #expect(try reopened.read(node, through: handle, offset: 0, count: 1 << 16) { Array($0) } == bytes, "\(name)")
        }
        let scan = try VolumeScan.run(reopened)
        #expect(scan.isClean, "\(scan.problems)")
    }
}
