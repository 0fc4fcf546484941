import EpochCrypto
import EpochFormat
import EpochHeader
import EpochReconcile
import EpochVolume
import EpochWAL
import Foundation
import Support
import Testing

/// `epochfs reconcile` with real etcd as the source of the committed epoch and as the place
/// members publish what their volumes hold.
@Suite(.serialized) struct ReconcileEtcdTests {
    static let epochKey = "/epochfs/epoch"

    /// One etcd member on loopback, in a directory of its own.
    final class SingleEtcd {
        let directory = TemporaryDirectory()
        let member: EtcdMember

        init() throws {
            try requireTools(etcdTools)
            member = EtcdMember(EtcdMember.Endpoint(name: "e1"), dataDirectory: directory.path + "/etcd", logDirectory: directory)
            try member.start()
            try member.waitHealthy()
        }

        var source: String { "etcd:\(member.endpoint.clientURL)/\(ReconcileEtcdTests.epochKey)" }

        func commit(_ epoch: UInt32) throws { try member.client.put(ReconcileEtcdTests.epochKey, String(epoch)) }
    }

    /// Three volumes of one host at epoch 1 (their own key files for epochs 1...5), the
    /// second mounted.
    static func hostVolumes(in directory: TemporaryDirectory) throws -> [MountedVolume] {
        let volumes = try (0..<3).map { try MountedVolume(in: directory, name: "v\($0)", epochs: 5) }
        volumes[0].unmount()
        volumes[2].unmount()
        return volumes
    }

    static func status(_ source: String) throws -> ClusterReport {
        let result = try runBounded([epochfsPath, "reconcile", "status", "--source", source, "--json"], seconds: 30)
        guard result.status == 0 else { throw TestFailure("reconcile status: \(result.output)") }
        return try JSONDecoder().decode(ClusterReport.self, from: Data(result.stdout.utf8))
    }

    @Test func aPutOfTheEpochKeyConvergesThreeVolumesAndTheMemberIsPublishedOnALease() throws {
        let etcd = try SingleEtcd()
        let volumes = try Self.hostVolumes(in: etcd.directory)
        defer { volumes.forEach { $0.destroy() } }
        try etcd.commit(1)
        let daemon = try ReconcilerDaemon(["--source", etcd.source, "--member", "host-a", "--interval", "3600", "--lease-ttl", "2",
                                           "--state", ""] + volumes.map(\.backing), in: etcd.directory)
        try daemon.waitUntil("host-a published at epoch 1") {
            (try? Self.status(etcd.source))?.members.first?.converged == true
        }
        try etcd.commit(3)
        try daemon.waitUntil("every volume at epoch 3") { try volumes.map { try headerState($0.backing).epoch } == [3, 3, 3] }
        #expect(try volumes.map { try headerState($0.backing).sequence } == [2, 2, 2])
        try daemon.waitUntil("the published report at epoch 3") { try Self.status(etcd.source).clusterEpoch == 3 }
        let report = try Self.status(etcd.source)
        #expect(report.target == 3 && report.members.map(\.member) == ["host-a"])
        #expect(report.members[0].volumes.map(\.epoch) == [3, 3, 3])
        #expect(report.members[0].volumes.map { $0.mountpoint != nil } == [false, true, false])
        let text = try runBounded([epochfsPath, "reconcile", "status", "--source", etcd.source])
        #expect(text.stdout.contains("cluster epoch    3") && text.stdout.contains("host-a"), "\(text.output)")

        // A member that dies disappears once its lease runs out.
        daemon.process.kill9()
        try daemon.waitUntil("host-a gone from the status") { try Self.status(etcd.source).members.isEmpty }
    }

    /// etcd stopped and started again under a watching reconciler: the watch is made again
    /// and the next put still converges every volume (the timer is an hour away).
    @Test func etcdRestartedUnderAWatchingReconcilerStillDeliversTheNextChange() throws {
        let etcd = try SingleEtcd()
        let volumes = try Self.hostVolumes(in: etcd.directory)
        defer { volumes.forEach { $0.destroy() } }
        try etcd.commit(2)
        let daemon = try ReconcilerDaemon(["--source", etcd.source, "--member", "host-b", "--interval", "3600", "--retry-base", "0.2",
                                           "--retry-cap", "1", "--state", ""] + volumes.map(\.backing), in: etcd.directory)
        try daemon.waitUntil("every volume at epoch 2") { try volumes.map { try headerState($0.backing).epoch } == [2, 2, 2] }
        #expect(etcd.member.stop() == 128 + SIGTERM)
        try etcd.member.start()
        try etcd.member.waitHealthy()
        try etcd.commit(4)
        try daemon.waitUntil("every volume at epoch 4") { try volumes.map { try headerState($0.backing).epoch } == [4, 4, 4] }
        #expect(daemon.log.contains("watch of \(Self.epochKey) broke"), "the watch saw etcd go")
        try daemon.waitUntil("the published report at epoch 4") { try Self.status(etcd.source).clusterEpoch == 4 }
    }

    /// kill -9 in the middle of a pass (after the second volume's rekey committed, before it
    /// was read back), then a restart: every volume at the target, each rekeyed once.
    @Test func aReconcilerKilledMidPassConvergesAfterARestart() throws {
        let etcd = try SingleEtcd()
        let volumes = try Self.hostVolumes(in: etcd.directory)
        defer { volumes.forEach { $0.destroy() } }
        try etcd.commit(1)
        let arguments = ["--source", etcd.source, "--member", "host-c", "--interval", "3600", "--state", ""] + volumes.map(\.backing)
        let doomed = try ReconcilerDaemon(arguments, in: etcd.directory, name: "doomed",
                                          environment: ["EPOCHFS_RECONCILE_CRASH_AT": "after-rekey:2"])
        try etcd.commit(2)
        #expect(doomed.process.wait(seconds: 30) == 128 + SIGKILL, "\(doomed.log)")
        #expect(try volumes.map { try headerState($0.backing).epoch } == [2, 2, 1])
        let restarted = try ReconcilerDaemon(arguments, in: etcd.directory)
        try restarted.waitUntil("every volume at epoch 2") { try volumes.map { try headerState($0.backing).epoch } == [2, 2, 2] }
        #expect(try volumes.map { try headerState($0.backing).sequence } == [2, 2, 2], "each rekey committed once")
    }

    /// A raft cluster of three members, each on its own mounted volume (same key files and
    /// cluster id) that also holds its etcd member's data dir: the three-member etcd cluster is
    /// the epoch source and runs on the volumes the reconcilers rekey live. Each member has
    /// its own reconciler on its own etcd member. The second member's key for epoch 2 is not
    /// there yet (its mount and its reconciler get a key command that lacks it): it fails,
    /// retries and is reported while the others move to 2. Meanwhile the leader wraps under
    /// the cluster epoch (1), which the lagging follower opens; under its own active epoch (2)
    /// the follower could not. Once the key arrives the follower catches up, the cluster epoch
    /// becomes 2, and every member opens everything the leader wrapped.
    @Test func theLeaderWrapsUnderTheEpochEveryMemberHoldsWhileMembersAreRekeyedAtDifferentMoments() throws {
        try requireTools(etcdTools)
        let directory = TemporaryDirectory()
        let keys = directory.path + "/keys"
        let shared = try (1...3).map { _ in Array(toHex(try SecureRandom.bytes(32)).utf8) }
        try FileManager.default.createDirectory(atPath: keys, withIntermediateDirectories: true)
        for (index, key) in shared.enumerated() { directory.write(key, to: "keys/\(index + 1).key") }
        let missingKey = directory.file("epoch-2-key-missing")
        #expect(FileManager.default.createFile(atPath: missingKey, contents: nil))
        let lackingKeySource = "command:f() { { [ \"$1\" != 2 ] || [ ! -e \(missingKey) ]; } && cat \(keys)/$1.key; }; f"
        let members = try (0..<3).map { number in
            try MountedVolume(in: directory, name: "member\(number)", keys: shared, clusterID: "reconcile-test-cluster",
                              mountKeySource: number == 1 ? lackingKeySource : nil)
        }
        let backings = members.map(\.backing)
        let endpoints = (1...3).map { EtcdMember.Endpoint(name: "e\($0)") }
        let etcd = zip(endpoints, members).map { endpoint, volume in
            EtcdMember(endpoint, cluster: endpoints, dataDirectory: volume.mountpoint + "/etcd", logDirectory: directory)
        }
        var daemons: [ReconcilerDaemon] = []
        defer {
            daemons.forEach { $0.process.stop() }
            etcd.forEach { $0.stop() }
            members.forEach { $0.destroy() }
        }
        for member in etcd { try member.start() }
        for member in etcd { try member.waitHealthy() }
        let client = etcd[0].client
        try client.put(Self.epochKey, "1")

        // Each reconciler asks its own etcd member first.
        daemons = try (0..<3).map { number in
            let order = (0..<3).map { endpoints[(number + $0) % 3].clientURL }.joined(separator: ",")
            return try ReconcilerDaemon(["--source", "etcd:\(order)/\(Self.epochKey)", "--member", "m\(number)", "--interval", "3600",
                                         "--retry-base", "0.1", "--retry-cap", "0.5", "--lease-ttl", "3", "--state", ""]
                                            + (number == 1 ? ["--key-source", lackingKeySource] : []) + [backings[number]],
                                        in: directory, name: "m\(number)")
        }
        let source = "etcd:\(endpoints[0].clientURL)/\(Self.epochKey)"
        try daemons[0].waitUntil("every member published at epoch 1") {
            let report = try? Self.status(source)
            return report?.members.count == 3 && report?.clusterEpoch == 1
        }

        try client.put(Self.epochKey, "2")
        try daemons[0].waitUntil("members 0 and 2 at epoch 2, member 1 failing") {
            let report = try Self.status(source)
            return report.members.map { $0.volumes.first?.epoch } == [2, 1, 2] && report.members[1].volumes[0].state == .failed
        }
        let lagging = try Self.status(source)
        #expect(lagging.target == 2 && lagging.clusterEpoch == 1)
        #expect(lagging.members[1].volumes[0].lastError?.contains("exited with status 1") == true,
                "the mount's reason: \(lagging.members[1].volumes[0].lastError ?? "")")
        #expect(lagging.members.map { $0.volumes[0].mountpoint } == members.map(\.mountpoint), "rekeyed live")
        #expect(try headerState(backings[0]).epoch == 2 && headerState(backings[2]).epoch == 2)

        // The leader (member 0, at epoch 2) wraps under the cluster epoch.
        let wal = directory.path + "/wal"
        let writer = try WALWriter(directory: wal, metadata: Array("reconcile".utf8), options: .init(segmentSize: 4096, sync: false))
        var plain: [RaftEntry] = []
        func propose(_ range: ClosedRange<UInt64>, report: ClusterReport) throws -> Epoch {
            let wrapper = try RaftPayloadWrapper(keyring: try keyring(backings[0]), memberEpochs: report.members.compactMap(\.heldEpoch))
            let entries = range.map { RaftEntry(term: 1, index: $0, data: proposalData(requestID: $0, Array("put k\($0)".utf8))) }
            plain += entries
            try writer.save(hardState: HardState(term: 1, vote: 1, commit: range.upperBound),
                            entries: try entries.map { var stored = $0; stored.data = try wrapper.wrap($0.data); return stored })
            return wrapper.keyID
        }
        #expect(try propose(1...20, report: lagging) == 1)
        #expect(try readWAL(wal, with: keyring(backings[1])) == .success(plain), "the lagging follower opens the leader's entries")
        let naive = try RaftPayloadWrapper(keyID: 2, raftDEK: AESGCMKey(try keyring(backings[0]).active.raftDEK!))
        #expect(try readOne(naive.wrap(plain[0].data), with: keyring(backings[1])) == .unknownKeyID(2),
                "under the leader's own epoch the follower could not")

        try FileManager.default.removeItem(atPath: missingKey)
        try daemons[1].waitUntil("member 1 at epoch 2 by its retries") { try headerState(backings[1]).epoch == 2 }
        try daemons[1].waitUntil("the cluster epoch 2") { try Self.status(source).clusterEpoch == 2 }
        #expect(try propose(21...40, report: Self.status(source)) == 2)
        try writer.close()
        for backing in backings {
            #expect(try readWAL(wal, with: keyring(backing)) == .success(plain), "\(backing) opens every entry")
        }

        // The etcd member that m2's reconciler asks first stops: it watches and reads through
        // the others, and the next epoch still reaches every member.
        #expect(etcd[2].stop() == 128 + SIGTERM)
        try client.put(Self.epochKey, "3")
        try daemons[2].waitUntil("every member at epoch 3") { try backings.map { try headerState($0).epoch } == [3, 3, 3] }
        try daemons[2].waitUntil("the cluster epoch 3") { try Self.status(source).clusterEpoch == 3 }

        // A member that dies drops out once its lease expires.
        daemons[2].process.kill9()
        try daemons[0].waitUntil("m2 gone") { try Self.status(source).members.map(\.member) == ["m0", "m1"] }
    }
}

private func keyring(_ backing: String) throws -> Keyring { try Volume.journal(backing: backing).open().keyring }

private enum ReadOutcome: Equatable {
    case success([RaftEntry])
    case failure(String)
}

/// Every entry of the WAL through a gate with `keyring`'s raft keys (cutover 0: all wrapped).
private func readWAL(_ wal: String, with keyring: Keyring) -> ReadOutcome {
    var entries: [RaftEntry] = []
    do {
        _ = try WALReader(directory: wal, gate: CutoverGate(cutover: 0, raftKeys: RaftKeys.lookup(in: keyring))).read { event in
            if case let .entry(entry) = event { entries.append(entry.copied()) }
        }
        return .success(entries)
    } catch {
        return .failure("\(error)")
    }
}

/// How one wrapped proposal fares through `keyring`'s raft keys: nil when it opens.
private func readOne(_ data: [UInt8], with keyring: Keyring) -> EnvelopeError? {
    let envelope = Array(data[ProposalHeader.size...])
    do {
        _ = try RaftEnvelope.open(envelope, raftDEKs: RaftKeys.lookup(in: keyring))
        return nil
    } catch let error as EnvelopeError {
        return error
    } catch {
        return nil
    }
}
