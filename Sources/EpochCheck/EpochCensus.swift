import EpochFormat
import EpochIO
import EpochStore
import Glibc

/// The items of a whole volume (file blocks, symlink targets, xattr values) by the epoch they
/// name, by object: counted by a scan of key ids, then each object counted again where it
/// changed (a run of blocks a reseal rewrote, a file written through the mount, an object
/// removed). Every change replaces what was counted for its object, so counts never drift.
struct EpochCensus {
    /// Items by the epoch they name, for the whole volume.
    private(set) var total: [Epoch: Int] = [:]
    private var objects: [BackingNode.Identity: Counted] = [:]

    /// What was counted for one object.
    struct Counted {
        /// The key ids of its blocks in runs: each from its first block index on (nil: holes
        /// and blocks that name none).
        private var blockRuns: [(first: Int, keyID: Epoch?)] = []
        private var blockCount = 0
        var xattrs: [Epoch: Int] = [:]
        var symlink: Epoch?

        /// Counted from the items a scan of one object emitted.
        init(_ items: [ScanItem] = []) {
            for item in items { add(item) }
        }

        mutating func add(_ item: ScanItem) {
            switch item.kind {
            case let .block(index) where index == blockCount:
                // A scan visits blocks in order: each one extends the last run or starts one.
                if blockRuns.last.map({ $0.keyID != item.keyID }) ?? true { blockRuns.append((index, item.keyID)) }
                blockCount += 1
            case let .block(index): replaceBlocks(from: index, by: [item.keyID])
            case .xattr: if let keyID = item.keyID { xattrs[keyID, default: 0] += 1 }
            case .symlinkTarget: symlink = item.keyID
            default: break
            }
        }

        /// Its items by epoch.
        var keyIDs: [Epoch: Int] {
            var counts = xattrs
            if let symlink { counts[symlink, default: 0] += 1 }
            for (position, run) in blockRuns.enumerated() {
                guard let keyID = run.keyID else { continue }
                counts[keyID, default: 0] += end(of: position) - run.first
            }
            return counts
        }

        /// Blocks `first…` now name `keyIDs` (one each); the blocks after them stay as they were.
        mutating func replaceBlocks(from first: Int, by keyIDs: [Epoch?]) {
            let last = first + keyIDs.count
            var runs = blockRuns.filter { $0.first < first }
            for (offset, keyID) in keyIDs.enumerated() { runs.append((first + offset, keyID)) }
            for (position, run) in blockRuns.enumerated() where end(of: position) > last {
                runs.append((max(run.first, last), run.keyID))
            }
            // Blocks between the old end and `first` (a reseal never leaves a gap; kept exact anyway).
            if first > blockCount { runs.insert((blockCount, nil), at: runs.firstIndex { $0.first >= first } ?? runs.endIndex) }
            blockCount = max(blockCount, last)
            blockRuns = runs.reduce(into: []) { merged, run in
                if merged.last?.keyID != run.keyID || merged.isEmpty { merged.append(run) }
            }
        }

        private func end(of position: Int) -> Int {
            position + 1 < blockRuns.count ? blockRuns[position + 1].first : blockCount
        }
    }

    /// Counts `tree`'s volume (a scan reading key ids only).
    init(_ tree: BackingTree) throws {
        var objects: [BackingNode.Identity: Counted] = [:]
        _ = try VolumeScan.run(tree, opening: false) { item in
            if let object = item.object { objects[object, default: Counted()].add(item) }
        }
        for (identity, counted) in objects { set(identity, to: counted) }
    }

    /// What `identity` holds now: `counted`, or nothing (nil: gone from the volume).
    mutating func set(_ identity: BackingNode.Identity, to counted: Counted?) {
        if let before = objects[identity] { subtract(before.keyIDs) }
        objects[identity] = counted
        if let counted { add(counted.keyIDs) }
    }

    /// Blocks `first…` of the file `identity` now name `keyIDs`.
    mutating func replaceBlocks(of identity: BackingNode.Identity, from first: Int, by keyIDs: [Epoch?]) {
        var counted = objects[identity] ?? Counted()
        counted.replaceBlocks(from: first, by: keyIDs)
        set(identity, to: counted)
    }

    /// Counts the object `node` again, whole; nothing once no name in the volume reaches it.
    mutating func recount(_ node: BackingNode, in tree: BackingTree) {
        guard let info = try? tree.volume.io.fstat(node.fd), info.st_nlink > 0 else { return set(node.identity, to: nil) }
        set(node.identity, to: Counted(VolumeScan.census(of: node, in: tree)))
    }

    /// Counts the xattrs of `node` again, and nothing else of it.
    mutating func recountXattrs(_ node: BackingNode, in tree: BackingTree) {
        var counted = objects[node.identity] ?? Counted()
        counted.xattrs = Counted(VolumeScan.census(of: node, in: tree, xattrsOnly: true)).xattrs
        set(node.identity, to: counted)
    }

    private mutating func add(_ counts: [Epoch: Int]) { total.merge(counts, uniquingKeysWith: +) }

    private mutating func subtract(_ counts: [Epoch: Int]) {
        for (keyID, count) in counts {
            total[keyID, default: 0] -= count
            if total[keyID]! <= 0 { total[keyID] = nil }
        }
    }
}
