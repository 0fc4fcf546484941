import EpochIO
import EpochStore
import Glibc
import Support
import Testing

/// A failed backing call during an attribute change (format 5, docs/FORMAT.md §5.5): the change
/// fails with that call's errno, the attributes read as before, and no integrity error follows,
/// whether the record that accepts the change failed or the backing setxattr after it did.
@Suite struct AttributeFaultTests {
    @Test(arguments: [RecordingIO.Kind.pwrite, .fdatasync, .setxattr, .removexattr])
    func aFailedChangeLeavesTheAttributesAsTheyWere(failing kind: RecordingIO.Kind) throws {
        let io = RecordingIO()
        let volume = try OfflineVolume(epochs: 1...1, io: io)
        let tree = volume.tree
        let (handle, file, _) = try tree.create(Array("f".utf8), in: tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { tree.close(handle) }
        try [UInt8](repeating: 1, count: 5000).withUnsafeBytes { try tree.write(file, through: handle, offset: 0, data: $0, caller: 0) }
        let (directory, _) = try tree.mkdir(Array("d".utf8), in: tree.root, mode: 0o755, owner: nil)
        for node in [file, directory] {
            try tree.setXattr(node, name: "user.kept", value: [1, 2, 3], flags: 0)
            if node === file { try tree.sync(handle, of: file, dataOnly: false) }
            io.inject(.fail(ENOSPC), into: kind)
            do {
                if kind == .removexattr {
                    try tree.removeXattr(node, name: "user.kept")
                } else {
                    try tree.setXattr(node, name: "user.kept", value: [4, 5, 6], flags: 0)
                }
                Issue.record("the change succeeded with a failing \(kind)")
            } catch let error as SystemError {
                #expect(error.errno == ENOSPC, "\(kind): \(error)")
            }
            io.removeFaults()
            #expect(try tree.getXattr(node, name: "user.kept") == [1, 2, 3])
            #expect(try tree.listXattrs(node) == ["user.kept"])
            try tree.setXattr(node, name: "user.kept", value: [7], flags: 0)
            #expect(try tree.getXattr(node, name: "user.kept") == [7])
        }
    }
}
