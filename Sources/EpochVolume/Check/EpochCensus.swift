/// The items of a whole volume (file blocks, symlink targets, xattr values) by the epoch they
/// name, kept exact while a re-encryption pass runs on a live mount: counted by a scan of key
/// ids at the pass's start, and then, for each piece the pass looks at (a run of a file's
/// blocks, an object's xattrs, a symlink), what the scan counted for it is replaced by what the
/// pass left. Pieces are named by their backing path, as the scan and the pass both reach them.
struct EpochCensus {
    /// Items by the epoch they name, for the whole volume.
    private(set) var total: [UInt32: Int] = [:]
    private var objects: [String: Counted] = [:]

    /// What the scan counted for one object.
    private struct Counted {
        /// The key ids of its blocks in runs: each from its first block index on (nil: holes).
        var blockRuns: [(first: Int, keyID: UInt32?)] = []
        var blockCount = 0
        var xattrs: [UInt32: Int] = [:]
        var symlink: UInt32?

        mutating func addBlock(_ index: Int, keyID: UInt32?) {
            if blockRuns.last.map({ $0.keyID != keyID }) ?? true { blockRuns.append((index, keyID)) }
            blockCount = index + 1
        }

        /// The blocks of `range` the scan found, by the epoch they named.
        func keyIDs(of range: Range<Int>) -> [UInt32: Int] {
            var counts: [UInt32: Int] = [:]
            for (position, run) in blockRuns.enumerated() {
                let end = position + 1 < blockRuns.count ? blockRuns[position + 1].first : blockCount
                let lower = max(run.first, range.lowerBound), upper = min(end, range.upperBound)
                if let keyID = run.keyID, upper > lower { counts[keyID, default: 0] += upper - lower }
            }
            return counts
        }
    }

    /// Counts `tree`'s volume (a scan reading key ids only).
    init(_ tree: BackingTree) throws {
        var census = EpochCensus()
        _ = try VolumeScan.run(tree, opening: false) { item in census.count(item) }
        self = census
    }

    private init() {}

    private mutating func count(_ item: ScanItem) {
        switch item.kind {
        case let .block(index):
            objects[item.backingPath, default: Counted()].addBlock(index, keyID: item.keyID)
        case .xattr:
            guard let keyID = item.keyID else { return }
            objects[item.backingPath, default: Counted()].xattrs[keyID, default: 0] += 1
        case .symlinkTarget:
            objects[item.backingPath, default: Counted()].symlink = item.keyID
        default:
            return
        }
        if let keyID = item.keyID { total[keyID, default: 0] += 1 }
    }

    /// Blocks `blocks` of the file at `path` now name the epochs `left` counts.
    mutating func replaceBlocks(of path: String, in blocks: Range<Int>, by left: [UInt32: Int]) {
        if let counted = objects[path] { subtract(counted.keyIDs(of: blocks)) }
        add(left)
    }

    /// Every block of the file at `path` now names the epochs `left` counts.
    mutating func replaceBlocks(of path: String, by left: [UInt32: Int]) {
        replaceBlocks(of: path, in: 0..<Int.max, by: left)
    }

    mutating func replaceXattrs(of path: String, by left: [UInt32: Int]) {
        subtract(objects[path]?.xattrs ?? [:])
        add(left)
    }

    mutating func replaceSymlink(at path: String, by left: UInt32?) {
        if let before = objects[path]?.symlink { subtract([before: 1]) }
        if let left { add([left: 1]) }
    }

    /// What a whole pass counted replaces everything: it looked at every item there is now.
    mutating func replaceAll(by counted: [UInt32: Int]) {
        total = counted.filter { $0.value > 0 }
        objects = [:]
    }

    private mutating func add(_ counts: [UInt32: Int]) { total.merge(counts, uniquingKeysWith: +) }

    private mutating func subtract(_ counts: [UInt32: Int]) {
        for (keyID, count) in counts {
            total[keyID, default: 0] -= count
            if total[keyID]! <= 0 { total[keyID] = nil }
        }
    }
}
