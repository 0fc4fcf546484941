import EpochFormat
import EpochIO
import Glibc
import Synchronization

/// What this process knows of one directory's record (docs/FORMAT.md §5.6), shared by every
/// node of the directory: loaded at first use, replaced by its own commits and removals.
final class DirectoryCommits: Sendable {
    private struct Known {
        var iv: [UInt8]
        var record: DirectoryRecord
        /// Entries already checked against the record, by digest: the object found then.
        var verified: [[UInt8]: BackingNode.Identity] = [:]
    }

    private let volume: LiveVolume
    private let identity: BackingNode.Identity
    private let known = Mutex<Known?>(nil)
    /// BackingNodes of this directory alive now (see `LiveVolume.content(of:)`).
    private let nodes = Atomic(0)
    /// A sequence of this directory's record that this process made durable: the record was in
    /// place when a commit's fsync of the directory returned. A parent's commit binds it (0:
    /// none), as it binds a file's durable record sequence.
    private let durable = Atomic<UInt64>(0)
    /// Held by a commit from its listing to its record, and by every removal of an entry
    /// around its removal: nothing leaves the directory between the listing and the record
    /// that names it, and nothing the record names leaves before the record lets it go.
    private let changes = Mutex(())

    init(volume: LiveVolume, identity: BackingNode.Identity) {
        self.volume = volume
        self.identity = identity
    }

    deinit { volume.forgetDirectory(of: identity) }

    func nodeCreated() { nodes.add(1, ordering: .relaxed) }
    func nodeReleased() { nodes.subtract(1, ordering: .relaxed) }
    var nodeCount: Int { nodes.load(ordering: .relaxed) }

    /// The record, read from the directory open at `directory` on first use.
    func record(in directory: FileDescriptor, ivs: DirectoryIV) throws -> (iv: [UInt8], record: DirectoryRecord) {
        if let known = known.withLock({ $0 }) { return (known.iv, known.record) }
        let read = try ivs.readRecord(in: directory)
        return known.withLock { known in
            if known == nil { known = Known(iv: read.iv, record: read.record) }
            return (known!.iv, known!.record)
        }
    }

    /// A record written whatever was known before (a re-anchor).
    func install(iv: [UInt8], record: DirectoryRecord) {
        known.withLock { $0 = Known(iv: iv, record: record) }
    }

    func adopt(_ record: DirectoryRecord) {
        known.withLock { known in
            guard known != nil else { return }
            known!.record = record
            known!.verified = known!.verified.filter { record.entry($0.key) != nil }
        }
    }

    /// The record of `sequence` is durable (it only ever grows).
    func noteDurable(_ sequence: UInt64) { durable.max(sequence, ordering: .relaxed) }

    /// The IV and durable record sequence a parent's commit may bind; nil before either is known.
    var durableBinding: (iv: [UInt8], sequence: UInt64)? {
        let sequence = durable.load(ordering: .relaxed)
        guard sequence > 0, let iv = known.withLock({ $0?.iv }) else { return nil }
        return (iv, sequence)
    }

    func wasVerified(_ digest: [UInt8], as identity: BackingNode.Identity) -> Bool {
        known.withLock { $0?.verified[digest] == identity }
    }

    func noteVerified(_ digest: [UInt8], as identity: BackingNode.Identity) {
        known.withLock { $0?.verified[digest] = identity }
    }

    /// Runs `body` holding this directory's changes, and `other`'s too (a rename between two
    /// directories), always in the same order, so two renames never wait for each other.
    func holdingChanges<R>(with other: DirectoryCommits? = nil, _ body: () throws -> R) rethrows -> R {
        guard let other, other !== self else { return try changes.withLock { _ in try body() } }
        let (first, second) = ObjectIdentifier(self) < ObjectIdentifier(other) ? (self, other) : (other, self)
        return try first.changes.withLock { _ in try second.changes.withLock { _ in try body() } }
    }
}
