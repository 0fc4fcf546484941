import EpochFormat
import EpochHeader
import EpochStore

/// What still names an epoch: items by category and a few of their locations.
public struct EpochReferences: Sendable, CustomStringConvertible {
    /// How many locations `description` names.
    static let examplesShown = 5

    public private(set) var counts: [String: Int] = [:]
    public private(set) var examples: [String] = []

    public init() {}

    public var total: Int { counts.values.reduce(0, +) }

    /// Counts one item of `category` ("blocks", "WAL entries", ...) at `location`.
    public mutating func add(_ category: String, at location: String) {
        counts[category, default: 0] += 1
        if examples.count < Self.examplesShown, !examples.contains(location) { examples.append(location) }
    }

    public mutating func merge(_ other: EpochReferences) {
        counts.merge(other.counts, uniquingKeysWith: +)
        for location in other.examples where examples.count < Self.examplesShown && !examples.contains(location) {
            examples.append(location)
        }
    }

    /// Refuses to retire `epoch` (`RetireError.stillReferenced`) unless nothing was counted.
    public func requireNone(retiring epoch: Epoch) throws {
        guard total == 0 else { throw RetireError.stillReferenced(epoch: epoch, description) }
    }

    /// `12 items (10 blocks, 2 xattrs), among them /a, /b`.
    public var description: String {
        let parts = counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        return "\(total) items (\(parts)), among them \(examples.joined(separator: ", "))"
    }
}

public enum RetireError: Error, Equatable, Sendable, CustomStringConvertible {
    case stillReferenced(epoch: Epoch, String)
    /// A raft cutover is set, so WAL entries above it may name the epoch, and no WAL was given to check.
    case walNotChecked(epoch: Epoch, cutover: UInt64)

    public var description: String {
        switch self {
        case let .stillReferenced(epoch, references):
            "refusing to retire epoch \(epoch): \(references) still name it (rewrite them under a newer epoch first)"
        case let .walNotChecked(epoch, cutover):
            "refusing to retire epoch \(epoch): the raft cutover is \(cutover), so WAL entries above it may name it; "
                + "name the WAL directories to check (epochfs retire --wal DIR)"
        }
    }
}

/// `retire E` (docs/FORMAT.md §3.6): the DEKs of an epoch are dropped only once a scan shows that
/// nothing names it any more, and never those of the active epoch.
public enum Retirement {
    /// The blocks, symlink targets and xattr values of `tree`'s volume that name `epoch`.
    public static func references(to epoch: Epoch, in tree: BackingTree) throws -> EpochReferences {
        var references = EpochReferences()
        _ = try VolumeScan.run(tree, visit: { item in
            if item.keyID == epoch { references.add(item.kind.category, at: item.location) }
        })
        return references
    }

    /// Retires `epoch` of `tree`'s volume in one header commit after the scan (and, when a raft
    /// cutover is set, `walReferences`, which counts the WAL entries above it naming the epoch)
    /// found nothing naming it. Retiring a retired epoch writes nothing.
    @discardableResult
    public static func retire(epoch: Epoch, in tree: BackingTree,
                              walReferences: ((VolumeHeader) throws -> EpochReferences)? = nil) throws -> VolumeHeader {
        try tree.volume.retire(epoch: epoch) { header in
            var found = try references(to: epoch, in: tree)
            if header.slot.raftCutover != .max {
                guard let walReferences else { throw RetireError.walNotChecked(epoch: epoch, cutover: header.slot.raftCutover) }
                found.merge(try walReferences(header))
            }
            try found.requireNone(retiring: epoch)
        }
    }
}
