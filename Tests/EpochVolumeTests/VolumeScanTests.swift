import CLinux
import EpochCheck
import EpochStore
import EpochVolume
import Foundation
import Glibc
import Support
import Testing

/// The scan's API as fsck, retire and re-encryption use it, without FUSE: every item with its
/// kind, path and key id, counts per key id, and progress up to the total.
@Suite struct VolumeScanTests {
    let volume: OfflineVolume
    var tree: BackingTree { volume.tree }

    init() throws { volume = try OfflineVolume(epochs: 1...2) }

    private func file(_ name: String, in parent: BackingNode, size: Int) throws {
        let (handle, node, _) = try tree.create(Array(name.utf8), in: parent, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o600, owner: nil)
        defer { tree.close(handle) }
        try [UInt8](repeating: 7, count: size).withUnsafeBytes { try tree.write(node, through: handle, offset: 0, data: $0, caller: 0) }
    }

    @Test func everyItemWithItsPathAndKeyIDAndProgressToTheEnd() throws {
        let (sub, _) = try tree.mkdir(Array("sub".utf8), in: tree.root, mode: 0o755, owner: nil)
        try file("a", in: sub, size: 10_000) // 3 blocks under epoch 1
        try tree.setXattr(try tree.lookup(Array("a".utf8), in: sub).0, name: "user.x", value: [1], flags: 0)
        try tree.volume.rekey(to: 2)
        try file("b", in: tree.root, size: 5000) // 2 blocks under epoch 2
        _ = try tree.symlink(Array("sub/a".utf8), named: Array("l".utf8), in: tree.root, owner: nil)

        var items: [ScanItem] = []
        var reports: [ScanProgress] = []
        let summary = try VolumeScan.run(tree, visit: { items.append($0) }, report: { reports.append($0) })

        #expect(summary.isClean)
        #expect(summary.keyIDs == [1: 4, 2: 3])
        #expect(summary.counts == ["header slots": 2, "directory IVs": 2, "directory records": 2, "names": 4, "blocks": 5, "xattrs": 1,
                                   "symlinks": 1, "attribute sets": 4])
        let blocks = items.filter { if case .block = $0.kind { true } else { false } }
        let byPath = Dictionary(grouping: blocks, by: \.location)
        #expect(byPath["/b"]?.map(\.kind) == [.block(0), .block(1)] && byPath["/b"]?.map(\.keyID) == [2, 2])
        #expect(byPath["/sub/a"]?.map(\.kind) == [.block(0), .block(1), .block(2)] && byPath["/sub/a"]?.map(\.keyID) == [1, 1, 1])
        #expect(items.contains { $0.kind == .symlinkTarget && $0.path == "/l" && $0.keyID == 2 })
        #expect(items.contains { if case .xattr(_, "user.x") = $0.kind { $0.path == "/sub/a" && $0.keyID == 1 } else { false } })
        let last = try #require(reports.last)
        #expect(last.bytesTotal > 0 && last.bytesDone == last.bytesTotal && last.items == items.count)

        let references = try Retirement.references(to: 1, in: tree)
        #expect(references.total == 4 && references.counts == ["blocks": 3, "xattrs": 1] && references.examples == ["/sub/a"])
    }
}
