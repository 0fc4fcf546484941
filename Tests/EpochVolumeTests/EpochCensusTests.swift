@testable import EpochCheck
@testable import EpochStore
@testable import EpochVolume
import EpochFormat
import Glibc
import Support
import Testing

/// The census re-encryption keeps: blocks counted in runs and replaced a range at a time, and
/// the changes a mount notes counted again (one by one, or the whole volume past a limit).
struct EpochCensusTests {
    private func counted(_ keyIDs: [Epoch?]) -> EpochCensus.Counted {
        let object = BackingNode.Identity(device: 1, inode: 2)
        return EpochCensus.Counted(keyIDs.enumerated().map { index, keyID in
            ScanItem(kind: .block(index), path: nil, backingPath: "f", object: object, keyID: keyID, problem: nil)
        })
    }

    @Test func blockRunsReplacedInTheMiddleAtTheEndAndPastIt() {
        var blocks = counted([1, 1, 1, nil, 1, 2, 2, 1])
        #expect(blocks.keyIDs == [1: 5, 2: 2])
        // 1 1 3 3 3 2 2 1
        blocks.replaceBlocks(from: 2, by: [3, 3, 3])
        #expect(blocks.keyIDs == [1: 3, 2: 2, 3: 3])
        // 1 1 3 3 3 2 3 3 3 3: past the old end too
        blocks.replaceBlocks(from: 6, by: [3, 3, 3, 3])
        #expect(blocks.keyIDs == [1: 2, 2: 1, 3: 7])
        // Past the end: the blocks between are holes, counted under no epoch.
        blocks.replaceBlocks(from: 14, by: [2])
        #expect(blocks.keyIDs == [1: 2, 2: 2, 3: 7])
        blocks.replaceBlocks(from: 0, by: [nil, nil])
        #expect(blocks.keyIDs == [2: 2, 3: 7])
        blocks.replaceBlocks(from: 5, by: [])
        #expect(blocks.keyIDs == [2: 2, 3: 7])
    }

    @Test func changesAreCountedAgainAndTooManyRecountTheVolume() throws {
        let volume = try OfflineVolume(epochs: 1...2)
        let tree = volume.tree
        func file(_ name: String, blocks: Int) throws -> BackingNode {
            let (handle, node, _) = try tree.create(Array(name.utf8), in: tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
            defer { tree.close(handle) }
            let bytes = [UInt8](repeating: 1, count: blocks * 4096)
            try bytes.withUnsafeBytes { _ = try tree.write(node, through: handle, offset: 0, data: $0, caller: 0) }
            return node
        }
        func scanned() throws -> [Epoch: Int] { try VolumeScan.run(tree, opening: false).keyIDs }

        let changes = TreeChanges(heldLimit: 2)
        let census = LiveCensus(tracking: changes)
        #expect(census.total(in: tree) == nil, "no census before a pass")
        let first = try file("a", blocks: 3)
        try census.begin(tree)
        #expect(census.total(in: tree) == [1: 3])

        // Unnoted changes are not seen: what the test shows the notes do.
        let second = try file("b", blocks: 2)
        #expect(census.total(in: tree) == [1: 3])
        changes.noteChanged(second)
        #expect(census.total(in: tree) == [1: 5])
        try tree.unlink(Array("a".utf8), in: tree.root)
        changes.noteChanged(first)
        #expect(census.total(in: tree) == [1: 2])
        #expect(try scanned() == [1: 2])

        // Three changed objects with room for two: the whole volume is counted again.
        let more = try (0..<3).map { try file("c\($0)", blocks: 1) }
        for node in more { changes.noteChanged(node) }
        _ = try file("unnoted", blocks: 4)
        #expect(census.total(in: tree) == [1: 9])
        #expect(try scanned() == [1: 9])
    }
}
