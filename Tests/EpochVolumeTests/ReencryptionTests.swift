import CLinux
import EpochCheck
import EpochStore
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

    /// A file held by a node (open on a mount) is resealed in place, a chunk at a time.
    @Test func stoppedWalkLeavesEverythingReadableAndTheNextFinishes() throws {
        let content = random(40 * 4096 + 5)
        try write(content, at: 0, to: "f", in: tree.root)
        let held = try tree.lookup(Array("f".utf8), in: tree.root).0
        defer { withExtendedLifetime(held) {} }
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

    /// The backing attributes of the file `name` in `parent`.
    private func backingInfo(_ name: String, in parent: BackingNode) throws -> stat {
        let node = try tree.lookup(Array(name.utf8), in: parent).0
        return try withExtendedLifetime(node) { try tree.volume.io.fstat(node.fd) }
    }

    /// Files of one link that no node holds are copied whole under the active epoch and renamed
    /// over the old ones: same plaintext, holes kept, mode, owner, times and xattrs kept; a
    /// hard-linked file and a held one are resealed in place and keep their inodes.
    @Test func copyOnWriteKeepsHolesAttributesAndXattrs() throws {
        let (sub, _) = try tree.mkdir(Array("sub".utf8), in: tree.root, mode: 0o755, owner: nil)
        let dense = random(300 * 4096 + 17) // more than one 1 MiB chunk of the copy
        try write(dense, at: 0, to: "dense", in: sub)
        // Data, a hole of 99 blocks, one block, a trailing hole of 100 blocks.
        var sparse = [UInt8](repeating: 0, count: 200 * 4096)
        let first = random(4096), middle = random(4096)
        sparse.replaceSubrange(0..<4096, with: first)
        sparse.replaceSubrange(100 * 4096..<101 * 4096, with: middle)
        try write(first, at: 0, to: "sparse", in: tree.root)
        try write(middle, at: 100 * 4096, to: "sparse", in: tree.root)
        do { // nodes of the files to be copied go before the walk, as when the mount forgot them
            let sparseNode = try tree.lookup(Array("sparse".utf8), in: tree.root).0
            let sparseHandle = try tree.open(sparseNode, flags: O_RDWR, caller: 0)
            try tree.truncate(sparseNode, to: sparse.count, through: sparseHandle, caller: 0)
            tree.close(sparseHandle)
        }
        let longName = String(repeating: "n", count: 200)
        let long = random(5000)
        try write(long, at: 0, to: longName, in: sub)
        let linked = random(3 * 4096)
        try write(linked, at: 0, to: "linked", in: tree.root)
        _ = try tree.link(try tree.lookup(Array("linked".utf8), in: tree.root).0, as: Array("other".utf8), in: sub)
        let heldContent = random(2 * 4096)
        try write(heldContent, at: 0, to: "held", in: tree.root)
        let held = try tree.lookup(Array("held".utf8), in: tree.root).0
        defer { withExtendedLifetime(held) {} }

        do {
            let denseNode = try tree.lookup(Array("dense".utf8), in: sub).0
            try tree.setXattr(denseNode, name: "user.tag", value: [7, 8, 9], flags: 0)
            try tree.setOwner(denseNode, user: 1234, group: 5678)
            try tree.setMode(denseNode, 0o640)
            try tree.setTimes(denseNode, access: timespec(tv_sec: 1_000_000, tv_nsec: 5), modification: timespec(tv_sec: 2_000_000, tv_nsec: 7))
        }
        let denseBefore = try backingInfo("dense", in: sub), sparseBefore = try backingInfo("sparse", in: tree.root)
        let linkedBefore = try backingInfo("linked", in: tree.root), heldBefore = try tree.volume.io.fstat(held.fd)
        let longBefore = try backingInfo(longName, in: sub)
        try tree.volume.rekey(to: 2)

        let done = try Reencryption.run(tree)
        // Before anything reads the files (and moves their access times).
        let denseAfter = try backingInfo("dense", in: sub), sparseAfter = try backingInfo("sparse", in: tree.root)

        // Stored blocks: 301 + 2 + 2 + 3 + 2 resealed; holes: 198.
        #expect(done.blocks.resealed == 310 && done.blocks.current == 198 && done.blocks.unreadable == 0)
        #expect(try VolumeScan.run(tree).keyIDs == [2: 310 + 1])
        #expect(try read("dense", in: sub) == dense && read("sparse", in: tree.root) == sparse && read(longName, in: sub) == long)
        #expect(try read("linked", in: tree.root) == linked && read("other", in: sub) == linked && read("held", in: tree.root) == heldContent)
        #expect(denseAfter.st_ino != denseBefore.st_ino && sparseAfter.st_ino != sparseBefore.st_ino)
        #expect(try backingInfo(longName, in: sub).st_ino != longBefore.st_ino)
        #expect(denseAfter.st_mode == denseBefore.st_mode && denseAfter.st_uid == 1234 && denseAfter.st_gid == 5678)
        #expect(denseAfter.st_mtim.tv_sec == 2_000_000 && denseAfter.st_mtim.tv_nsec == 7 && denseAfter.st_atim.tv_sec == 1_000_000)
        #expect(try tree.getXattr(try tree.lookup(Array("dense".utf8), in: sub).0, name: "user.tag") == [7, 8, 9])
        // Sparse: two stored blocks and the header, as before; not 200 blocks.
        #expect(sparseAfter.st_size == sparseBefore.st_size && Int(sparseAfter.st_blocks) <= Int(sparseBefore.st_blocks))
        #expect(Int(sparseAfter.st_blocks) * 512 < 16 * 4096, "\(sparseAfter.st_blocks) sectors")
        let linkedAfter = try backingInfo("linked", in: tree.root)
        #expect(linkedAfter.st_ino == linkedBefore.st_ino && linkedAfter.st_nlink == 2)
        #expect(try backingInfo("held", in: tree.root).st_ino == heldBefore.st_ino)
        // Nothing of the copies is left behind, and the listings are as they were.
        let backing = tree.volume.backing
        #expect(try tree.volume.io.readdir(at: backing).allSatisfy { $0.name != "epochfs.reseal" })
        let listing = try tree.volume.io.readdir(at: backing + "/" + (try tree.volume.io.readdir(at: backing).first { $0.type == DT_DIR }!.name))
        #expect(listing.filter { NameCodec.isLongNameSideFile($0.name) }.count == 1 && listing.allSatisfy { $0.name != "epochfs.reseal" })
        let handle = try tree.openDirectory(sub)
        defer { tree.close(handle) }
        #expect(Set(try tree.listing(of: sub, through: handle).map { String(decoding: $0.name, as: UTF8.self) }) == ["dense", longName, "other"])

        let again = try Reencryption.run(tree)
        #expect(again.blocks.resealed == 0 && again.blocks.current == 310 + 198)
    }

    /// A copy left behind by a crash is replaced by the next copy, and never listed.
    @Test func leftoverCopyIsReplaced() throws {
        let content = random(3 * 4096)
        try write(content, at: 0, to: "f", in: tree.root)
        let leftover = tree.volume.backing + "/epochfs.reseal"
        #expect(FileManager.default.createFile(atPath: leftover, contents: Data([1, 2, 3])))
        let handle = try tree.openDirectory(tree.root)
        #expect(try tree.listing(of: tree.root, through: handle).map(\.name) == [Array("f".utf8)])
        tree.close(handle)
        try tree.volume.rekey(to: 2)
        let done = try Reencryption.run(tree)
        #expect(done.blocks.resealed == 3 && !FileManager.default.fileExists(atPath: leftover))
        #expect(try read("f", in: tree.root) == content)
    }

    /// A disk without room for a second copy of a file: it is resealed in place, through the
    /// slots, which need two blocks; the partial copy is gone.
    @Test func fullDiskResealsInPlace() throws {
        let disk = try SmallDisk(megabytes: 4)
        let backing = disk.path + "/backing"
        _ = try Volume.create(backing: backing, keySource: "file:\(volume.keys.directory.path)/%d.key", epoch: 1, blockSize: 4096)
        let tree = try BackingTree(volume: try LiveVolume(backing: backing))
        let content = random(256 * 4096)
        do {
            let (handle, node, _) = try tree.create(Array("f".utf8), in: tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
            defer { tree.close(handle) }
            try content.withUnsafeBytes { try tree.write(node, through: handle, offset: 0, data: $0, caller: 0) }
        }
        let inode = try withExtendedLifetime(try tree.lookup(Array("f".utf8), in: tree.root).0) { try tree.volume.io.fstat($0.fd).st_ino }
        try tree.volume.rekey(to: 2)
        disk.fill()
        disk.makeRoom(64 << 10)

        let done = try Reencryption.run(tree)

        #expect(done.blocks.resealed == 256)
        let node = try tree.lookup(Array("f".utf8), in: tree.root).0
        #expect(try tree.volume.io.fstat(node.fd).st_ino == inode)
        let handle = try tree.open(node, flags: O_RDONLY, caller: 0)
        defer { tree.close(handle) }
        #expect(try tree.read(node, through: handle, offset: 0, count: content.count) { Array($0) } == content)
        #expect(try VolumeScan.run(tree).keyIDs == [2: 256])
        #expect(!FileManager.default.fileExists(atPath: backing + "/epochfs.reseal"))
    }
}
