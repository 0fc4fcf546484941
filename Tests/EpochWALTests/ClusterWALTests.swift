import EpochCrypto
import EpochFormat
import EpochHeader
import EpochStore
import EpochVolume
import Support
import Testing
@testable import EpochWAL

/// A raft cluster of three members, each on its own volume made with the same key source and
/// cluster id (docs/FORMAT.md §3.7): a WAL that the leader's payload wrapper sealed is read and
/// gate-verified through every member's own keyring, before and after all of them rekey.
@Suite struct ClusterWALTests {
    static let clusterID = "5f0c8a2e-4b1d-4c3e-9a7f-1e2d3c4b5a69"
    static let cutover: UInt64 = 5

    /// Key files `<epoch>.key` (hex) that every member's key source reads.
    struct KeyDirectory {
        let directory = TemporaryDirectory()

        /// Random keys for epochs 1 and 2, or epoch 1's copied from `other`.
        init(sharingEpoch1 other: KeyDirectory? = nil) throws {
            directory.write(try other.map { readFile($0.directory.path + "/1.key") } ?? Self.randomKeyFile(), to: "1.key")
            directory.write(try Self.randomKeyFile(), to: "2.key")
        }

        static func randomKeyFile() throws -> [UInt8] { Array((toHex(try SecureRandom.bytes(32)) + "\n").utf8) }

        var spec: String { "file:\(directory.path)/%d.key" }
    }

    /// One member: a volume in a directory of its own, at epoch 1, with the raft cutover set.
    struct Member {
        let directory = TemporaryDirectory()
        var backing: String { directory.path + "/backing" }

        init(keySource: String, clusterID: String? = ClusterWALTests.clusterID) throws {
            _ = try Volume.create(backing: backing, keySource: keySource, epoch: 1, blockSize: 4096,
                                  clusterID: try clusterID.map { try ClusterID($0) })
            try LiveVolume(backing: backing).setRaftCutover(ClusterWALTests.cutover)
        }

        func open() throws -> LiveVolume { try LiveVolume(backing: backing) }
    }

    /// The payload wrapper a proposer on `volume` uses: its active raft DEK and epoch.
    static func wrapper(_ volume: LiveVolume) throws -> RaftPayloadWrapper {
        let active = volume.header.keyring.active
        return try RaftPayloadWrapper(keyID: active.epoch, raftDEK: AESGCMKey(active.raftDEK!))
    }

    /// The gate a reader on `volume` uses: the volume's cutover and its keyring's raft DEKs.
    static func gate(_ volume: LiveVolume) -> CutoverGate {
        CutoverGate(cutover: volume.header.slot.raftCutover, raftKeys: RaftKeys.lookup(in: volume.header.keyring))
    }

    /// Saves `entries` in batches of five, so that the log spans segments.
    static func save(_ entries: [RaftEntry], term: UInt64, to writer: WALWriter) throws {
        for batch in stride(from: 0, to: entries.count, by: 5) {
            let slice = Array(entries[batch..<min(batch + 5, entries.count)])
            try writer.save(hardState: HardState(term: term, vote: 1, commit: slice.last!.index), entries: slice)
        }
    }

    /// Proposals for `range` as the application makes them, with a leader no-op and a conf
    /// change among them (both stay clear), and what the leader stores: each proposal above the
    /// cutover wrapped.
    static func proposals(_ range: ClosedRange<UInt64>, term: UInt64, wrapper: RaftPayloadWrapper)
        throws -> (plain: [RaftEntry], stored: [RaftEntry]) {
        let plain = range.map { index in
            switch index % 10 {
            case 0: RaftEntry(term: term, index: index)
            case 5: RaftEntry(type: .confChange, term: term, index: index, data: [0x08, 0x01, 0x10, UInt8(index)])
            default: RaftEntry(term: term, index: index, data: proposal(requestID: 1000 + index, Array("put k\(index) v\(index)".utf8)))
            }
        }
        let stored = try plain.map { entry in
            var stored = entry
            if entry.index > cutover, entry.type == .normal, !entry.data.isEmpty { stored.data = try wrapper.wrap(entry.data) }
            return stored
        }
        return (plain, stored)
    }

    /// Reads the whole WAL through `volume`'s keys and checks that it delivers exactly `plain`,
    /// every proposal above the cutover opened under the epoch `keyIDs` gives for its index.
    static func expectReads(_ wal: String, through volume: LiveVolume, plain: [RaftEntry], keyIDs: (UInt64) -> Epoch,
                            _ member: String) throws {
        let (log, result) = readAll(wal, gate: gate(volume))
        let summary = try result.get()
        #expect(log.entries == plain, "\(member)")
        let wrapped = plain.filter { $0.index > cutover && $0.type == .normal && !$0.data.isEmpty }
        #expect(summary.unwrappedEntries == wrapped.count, "\(member)")
        for entry in wrapped { #expect(log.keyIDs[entry.index] == keyIDs(entry.index), "\(member), index \(entry.index)") }
    }

    /// Reads the WAL through `volume`'s keys and expects the gate to stop at `index` for `reason`,
    /// having delivered exactly the entries before it, and nothing wrong.
    static func expectStops(_ wal: String, through volume: LiveVolume, at index: UInt64, plain: [RaftEntry],
                            reason: UnwrapFailure, _ member: String) {
        let (log, result) = readAll(wal, gate: gate(volume))
        guard case let .failure(WALError.unwrapFailed(failed, lastDelivered, _, failure)) = result else {
            Issue.record("\(member): expected the gate to stop at \(index), got \(result)")
            return
        }
        #expect(failed == index && lastDelivered == index - 1, "\(member)")
        #expect(failure == reason, "\(member)")
        #expect(log.entries == Array(plain.prefix(Int(index - 1))), "\(member)")
    }

    @Test func everyMemberReadsTheLeadersWALAcrossARekey() throws {
        let keys = try KeyDirectory()
        let members = try (0..<3).map { _ in try Member(keySource: keys.spec) }
        let leader = try members[0].open()
        let wal = members[0].directory.path + "/wal"
        let writer = try WALWriter(directory: wal, metadata: testMetadata, options: .init(segmentSize: 1024, sync: false))

        let before = try Self.proposals(1...40, term: 1, wrapper: try Self.wrapper(leader))
        try Self.save(before.stored, term: 1, to: writer)
        for (number, member) in members.enumerated() {
            try Self.expectReads(wal, through: try member.open(), plain: before.plain, keyIDs: { _ in 1 }, "member \(number)")
        }

        // Every member to epoch 2: the leader live (as the control file's `rekey 2` does), the
        // others offline, one of them with its key source given as a command that prints the
        // same key files (a spec of its own; only what it yields matters).
        let notYetRekeyed = try members[1].open()
        try leader.rekey(to: 2)
        _ = try Volume.journal(backing: members[1].backing).rekey(to: 2)
        _ = try Volume.journal(backing: members[2].backing, keySourceOverride: "command:f() { cat \(keys.directory.path)/$1.key; }; f")
            .rekey(to: 2)

        let after = try Self.proposals(41...80, term: 2, wrapper: try Self.wrapper(leader))
        #expect(try Self.wrapper(leader).keyID == 2)
        try Self.save(after.stored, term: 2, to: writer)
        try writer.close()
        #expect(writer.segments.count >= 4, "the log spans segments")

        let plain = before.plain + after.plain
        let keyIDs: (UInt64) -> Epoch = { $0 <= 40 ? 1 : 2 }
        try Self.expectReads(wal, through: leader, plain: plain, keyIDs: keyIDs, "leader, live")
        for (number, member) in members.enumerated() {
            let volume = try member.open()
            #expect(volume.header.epoch == 2)
            try Self.expectReads(wal, through: volume, plain: plain, keyIDs: keyIDs, "member \(number)")
        }
        // A member that has not added epoch 2 yet stops at its first entry, as unknown.
        Self.expectStops(wal, through: notYetRekeyed, at: 41, plain: plain, reason: .envelope(.unknownKeyID(2)),
                         "member 1 before its rekey")
    }

    /// Volumes that do not share the cluster's raft DEK cannot open its entries: another
    /// cluster id, another key for the epoch, or no cluster id at all. Each fails
    /// authentication at the first wrapped entry; nothing after it comes out, nothing wrong.
    @Test func outsidersFailAuthentication() throws {
        let keys = try KeyDirectory()
        let leaderMember = try Member(keySource: keys.spec)
        let leader = try leaderMember.open()
        let wal = leaderMember.directory.path + "/wal"
        let log = try Self.proposals(1...12, term: 1, wrapper: try Self.wrapper(leader))
        let writer = try WALWriter(directory: wal, metadata: testMetadata, options: .init(sync: false))
        try Self.save(log.stored, term: 1, to: writer)
        try writer.close()

        let otherKeys = try KeyDirectory()
        let outsiders = [
            ("another cluster id", try Member(keySource: keys.spec, clusterID: "5f0c8a2e-4b1d-4c3e-9a7f-1e2d3c4b5a6A")),
            ("another key", try Member(keySource: otherKeys.spec)),
            ("no cluster id", try Member(keySource: keys.spec, clusterID: nil)),
        ]
        for (name, outsider) in outsiders {
            Self.expectStops(wal, through: try outsider.open(), at: Self.cutover + 1, plain: log.plain,
                             reason: .envelope(.authenticationFailed(keyID: 1)), name)
        }
    }

    /// A member that got another key when it rekeyed to epoch 2 (a wrong key file) still opens
    /// the cluster's epoch 1 entries, and fails authentication at the first entry of epoch 2.
    @Test func aMemberRekeyedWithAnotherKeyFailsFromThatEpochOn() throws {
        let keys = try KeyDirectory()
        let leaderMember = try Member(keySource: keys.spec)
        let strayKeys = try KeyDirectory(sharingEpoch1: keys)
        let stray = try Member(keySource: strayKeys.spec)
        let leader = try leaderMember.open()
        let first = try Self.proposals(1...20, term: 1, wrapper: try Self.wrapper(leader))
        try leader.rekey(to: 2)
        let second = try Self.proposals(21...30, term: 2, wrapper: try Self.wrapper(leader))
        let wal = leaderMember.directory.path + "/wal"
        let writer = try WALWriter(directory: wal, metadata: testMetadata, options: .init(sync: false))
        try Self.save(first.stored, term: 1, to: writer)
        try Self.save(second.stored, term: 2, to: writer)
        try writer.close()

        let strayVolume = try stray.open()
        try strayVolume.rekey(to: 2)
        Self.expectStops(wal, through: strayVolume, at: 21, plain: first.plain + second.plain,
                         reason: .envelope(.authenticationFailed(keyID: 2)), "member with another key for epoch 2")
    }
}
