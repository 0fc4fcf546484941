import CLinux
import EpochVolume
import Foundation
import Glibc
import Support
import Testing

/// Re-encryption without FUSE: every block, symlink target and xattr value ends under the active
/// epoch with the same plaintext, and a second walk finds nothing left to do.
@Suite struct ReencryptionTests {
    let volume: OfflineVolume
    var tree: BackingTree { volume.tree }

    init() throws { volume = try OfflineVolume(epochs: 1...3) }

    private func write(_ bytes: [UInt8], at offset: Int, to name: String, in parent: BackingNode) throws {
        let (handle, node, _) = try tree.create(Array(name.utf8), in: parent, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { tree.close(handle) }
        try bytes.withUnsafeBytes { try tree.write(node, through: handle, offset: offset, data: $0, caller: 0) }
    }

    private func read(_ name: String, in parent: BackingNode) throws -> [UInt8] {
        let node = try tree.lookup(Array(name.utf8), in: parent).0
        let handle = try tree.open(node, flags: O_RDONLY, caller: 0)
        defer { tree.close(handle) }
        return try tree.read(node, through: handle, offset: 0, count: 1 << 22) { Array($0) }
    }

    private func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255) } }

    @Test func everyItemEndsUnderTheActiveEpochWithItsPlaintext() throws {
        let (sub, _) = try tree.mkdir(Array("sub".utf8), in: tree.root, mode: 0o755, owner: nil)
        var big = random(10 * 4096 + 123)
        try write(big, at: 0, to: "big", in: sub)
        // A hole of two blocks between the data and a partial last block.
        let sparse = random(100) + [UInt8](repeating: 0, count: 3 * 4096) + random(700)
        try write(Array(sparse.prefix(100)), at: 0, to: "sparse", in: tree.root)
        try write(Array(sparse.suffix(700)), at: sparse.count - 700, to: "sparse", in: tree.root)
        _ = try tree.link(try tree.lookup(Array("big".utf8), in: sub).0, as: Array("hard".utf8), in: tree.root)
        let longTarget = Array(String(repeating: "t/", count: 1600).utf8)
        _ = try tree.symlink(Array("sub/big".utf8), named: Array("short".utf8), in: tree.root, owner: nil)
        _ = try tree.symlink(longTarget, named: Array("long".utf8), in: sub, owner: nil)
        try tree.setXattr(tree.root, name: "user.root", value: [1, 2, 3], flags: 0)
        try tree.setXattr(try tree.lookup(Array("big".utf8), in: sub).0, name: "user.file", value: random(300), flags: 0)
        let fileXattr = try tree.getXattr(try tree.lookup(Array("big".utf8), in: sub).0, name: "user.file")
        try tree.volume.rekey(to: 2)
        // Two blocks rewritten under epoch 2, the rest stays under 1.
        let page = random(4096)
        big.replaceSubrange(4096..<8192 + 100, with: page + Array(big[8192..<8292]))
        try write(Array(big[4096..<(8192 + 100)]), at: 4096, to: "big", in: sub)
        try tree.volume.rekey(to: 3)
        let before = try VolumeScan.run(tree)
        #expect(before.keyIDs[1] ?? 0 > 0 && before.keyIDs[2] ?? 0 > 0)

        var reports = 0
        let done = try Reencryption.run(tree, chunk: 4) { _ in
            reports += 1
            return true
        }

        // 11 blocks of big, 2 stored blocks of sparse (2 holes), 2 symlinks, 2 xattrs (one on the root).
        #expect(done.blocks.resealed == 13 && done.blocks.unreadable == 0)
        #expect(done.symlinksResealed == 2 && done.xattrsResealed == 2)
        #expect(done.blocksTotal == 11 + 4 && done.blocksDone == done.blocksTotal && reports > 4)
        #expect(done.keyIDs == [3: 13 + 2 + 2])
        let after = try VolumeScan.run(tree)
        #expect(after.isClean, "\(after.problems)")
        #expect(after.keyIDs == [3: 17], "\(after.keyIDs)")
        #expect(try read("big", in: sub) == big && read("hard", in: tree.root) == big)
        #expect(try read("sparse", in: tree.root) == sparse)
        #expect(try tree.readlink(try tree.lookup(Array("short".utf8), in: tree.root).0) == Array("sub/big".utf8))
        #expect(try tree.readlink(try tree.lookup(Array("long".utf8), in: sub).0) == longTarget)
        #expect(try tree.getXattr(tree.root, name: "user.root") == [1, 2, 3])
        #expect(try tree.getXattr(try tree.lookup(Array("big".utf8), in: sub).0, name: "user.file") == fileXattr)
        // The long target's old link file went with it: only the new one is left.
        #expect(try tree.volume.io.readdir(at: tree.volume.backing + "/epochfs.links").count == 1)

        let again = try Reencryption.run(tree)
        #expect(again.blocks.resealed == 0 && again.symlinksResealed == 0 && again.xattrsResealed == 0)
        #expect(again.blocks.current == 15 && again.keyIDs == [3: 17])
    }

    @Test func stoppedWalkLeavesEverythingReadableAndTheNextFinishes() throws {
        let content = random(40 * 4096 + 5)
        try write(content, at: 0, to: "f", in: tree.root)
        try tree.volume.rekey(to: 2)
        var chunks = 0
        let stopped = try Reencryption.run(tree, chunk: 8) { _ in
            chunks += 1
            return chunks < 2
        }
        #expect(stopped.blocks.resealed == 16 && stopped.blocksDone < stopped.blocksTotal)
        #expect(try read("f", in: tree.root) == content)
        #expect(try VolumeScan.run(tree).keyIDs == [1: 25, 2: 16])

        let finished = try Reencryption.run(tree, chunk: 8)
        #expect(finished.blocks.resealed == 25 && finished.blocks.current == 16)
        #expect(try read("f", in: tree.root) == content)
    }

    @Test func rekeyDuringTheWalkRetargetsIt() throws {
        let content = random(20 * 4096)
        try write(content, at: 0, to: "f", in: tree.root)
        try tree.volume.rekey(to: 2)
        var rekeyed = false
        let done = try Reencryption.run(tree, chunk: 4) { progress in
            if !rekeyed && progress.blocksDone >= 8 {
                rekeyed = true
                _ = try? tree.volume.rekey(to: 3)
            }
            return true
        }
        #expect(rekeyed && done.target == 3 && done.keyIDs == [3: 20])
        #expect(try VolumeScan.run(tree).keyIDs == [3: 20])
        #expect(try read("f", in: tree.root) == content)
    }
}
