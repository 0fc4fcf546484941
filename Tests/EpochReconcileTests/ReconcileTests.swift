import EpochReconcile
import Foundation
import Support
import Testing

/// `epochfs reconcile` with file and command sources, on real volumes: offline ones and one
/// mounted (rekeyed live through its control file).
@Suite(.serialized) struct ReconcileTests {
    /// Three volumes of one host, each with its own key files for epochs 1...6, at epoch 1;
    /// the second one mounted.
    final class Host {
        let directory: TemporaryDirectory
        let volumes: [MountedVolume]
        var backings: [String] { volumes.map(\.backing) }
        var epochFile: String { directory.file("epoch") }
        var statePath: String { directory.file("state.json") }

        init() throws {
            let directory = TemporaryDirectory()
            self.directory = directory
            volumes = try (0..<3).map { try MountedVolume(in: directory, name: "v\($0)", epochs: 6) }
            volumes[0].unmount()
            volumes[2].unmount()
        }

        deinit { volumes.forEach { $0.destroy() } }

        /// Replaces the epoch file by rename, as an operator's tool would.
        func commit(_ epoch: UInt32) throws {
            try Data("\(epoch)\n".utf8).write(to: URL(fileURLWithPath: epochFile), options: .atomic)
        }

        func states() throws -> [(epoch: UInt32, sequence: UInt64)] { try backings.map(headerState) }

        func reconcileOnce(_ extra: [String] = [], environment: [String: String] = [:]) throws -> CommandResult {
            try runBounded([productPath("epochfs"), "reconcile", "--once", "--source", "file:\(epochFile)", "--state", statePath]
                + extra + backings, environment: environment, seconds: 120)
        }

        func lastReport() throws -> MemberReport {
            try JSONDecoder().decode(MemberReport.self, from: Data(contentsOf: URL(fileURLWithPath: statePath)))
        }
    }

    @Test func oncePassRekeysOfflineAndMountedVolumesAndASecondWritesNothing() throws {
        let host = try Host()
        try host.commit(3)
        let result = try host.reconcileOnce()
        #expect(result.status == 0, "\(result.output)")
        let states = try host.states()
        #expect(states.map(\.epoch) == [3, 3, 3])
        #expect(states.map(\.sequence) == [2, 2, 2], "one header commit each")
        #expect(try host.volumes[1].status()["epoch"] as? Int == 3, "the mount itself is at the new epoch")
        let report = try host.lastReport()
        #expect(report.target == 3 && report.converged)
        #expect(report.volumes.map(\.state) == [.rekeyed, .rekeyed, .rekeyed])
        #expect(report.volumes.map { $0.mountpoint != nil } == [false, true, false])

        let again = try host.reconcileOnce()
        #expect(again.status == 0, "\(again.output)")
        #expect(try host.states().map(\.sequence) == [2, 2, 2], "at the target nothing is written")
        #expect(try host.lastReport().volumes.map(\.state) == [.atTarget, .atTarget, .atTarget])
    }

    /// The daemon reads the file again on inotify's word alone: the poll and the timer are an
    /// hour away.
    @Test func theDaemonFollowsTheFileThroughInotify() throws {
        let host = try Host()
        try host.commit(2)
        let daemon = try ReconcilerDaemon(["--source", "file:\(host.epochFile)", "--poll", "3600", "--interval", "3600",
                                           "--state", host.statePath] + host.backings, in: host.directory)
        try daemon.waitUntil("every volume at epoch 2") { try host.states().map(\.epoch) == [2, 2, 2] }
        try host.commit(4)
        try daemon.waitUntil("every volume at epoch 4") { try host.states().map(\.epoch) == [4, 4, 4] }
        #expect(try host.states().map(\.sequence) == [3, 3, 3])
        #expect(daemon.process.isRunning)
    }

    @Test func aCommandSourceIsPolled() throws {
        let host = try Host()
        try host.commit(2)
        let daemon = try ReconcilerDaemon(["--source", "command:cat \(host.epochFile)", "--poll", "0.2", "--interval", "3600",
                                           "--state", host.statePath, host.backings[0]], in: host.directory)
        try daemon.waitUntil("the volume at epoch 2") { try headerState(host.backings[0]).epoch == 2 }
        try host.commit(5)
        try daemon.waitUntil("the volume at epoch 5") { try headerState(host.backings[0]).epoch == 5 }
    }

    @Test func aVolumeAboveTheTargetIsLeftAndReported() throws {
        let host = try Host()
        let rekeyed = try runBounded([productPath("epochfs"), "rekey", host.backings[2], "5"])
        #expect(rekeyed.status == 0, "\(rekeyed.output)")
        try host.commit(2)
        let result = try host.reconcileOnce()
        #expect(result.status == 3, "\(result.output)")
        #expect(try host.states().map(\.epoch) == [2, 2, 5])
        let report = try host.lastReport().volumes[2]
        #expect(report.state == .aboveTarget && report.epoch == 5)
        #expect(report.lastError?.contains("above the committed epoch 2") == true)
        #expect(result.stderr.contains("above the committed epoch 2"), "logged as an error")
    }

    /// A volume whose header does not open with its epoch's key (the key file replaced) is
    /// reported with the reason, not skipped, and is not written; the others proceed.
    @Test func aHeaderThatDoesNotOpenIsReportedAndTheOthersProceed() throws {
        let host = try Host()
        try host.volumes[0].addKey(epoch: 1)
        try host.commit(2)
        let result = try host.reconcileOnce()
        #expect(result.status == 1, "\(result.output)")
        let report = try host.lastReport().volumes
        #expect(report.map(\.state) == [.failed, .rekeyed, .rekeyed])
        #expect(report[0].lastError?.contains("the key for epoch 1 does not open the newest header slot") == true,
                "\(report[0].lastError ?? "")")
        #expect(result.stderr.contains("does not open the newest header slot"), "logged")
        #expect(try host.backings.dropFirst().map { try headerState($0).epoch } == [2, 2])
        let status = try runBounded([productPath("epochfs"), "reconcile", "status", "--state", host.statePath])
        #expect(status.stdout.contains("cluster epoch    unknown"), "\(status.output)")
    }

    /// Volumes from conf files (as the systemd template reads them); one whose key command
    /// fails is reported with the reason and retried with backoff while the other proceeds,
    /// and converges once its key source works, with no change of the source.
    @Test func aFailingKeySourceIsReportedAndRetriedWhileOthersProceed() throws {
        let host = try Host()
        let conf = host.directory.file("conf")
        let broken = host.directory.file("broken")
        try FileManager.default.createDirectory(atPath: conf, withIntermediateDirectories: true)
        let keys = host.volumes[2].keys
        try Data("""
            # the first volume
            BACKING=\(host.backings[0])
            MOUNTPOINT=\(host.volumes[0].mountpoint)
            OPTIONS=allow_other

            """.utf8).write(to: URL(fileURLWithPath: conf + "/first.conf"))
        try Data("""
            BACKING='\(host.backings[2])'
            KEYSOURCE="command:f() { test ! -e \(broken) && cat \(keys)/$1.key; }; f"

            """.utf8).write(to: URL(fileURLWithPath: conf + "/second.conf"))
        try Data("SOURCE=file:/nowhere\n".utf8).write(to: URL(fileURLWithPath: conf + "/not-a-volume.conf"))
        #expect(try ReconciledVolume.configured(in: conf).map(\.name) == ["first", "second"])

        #expect(FileManager.default.createFile(atPath: broken, contents: nil))
        try host.commit(2)
        let once = try runBounded([productPath("epochfs"), "reconcile", "--once", "--source", "file:\(host.epochFile)",
                                   "--config-directory", conf, "--state", host.statePath])
        #expect(once.status == 1, "\(once.output)")
        #expect(try headerState(host.backings[0]).epoch == 2)
        #expect(try headerState(host.backings[2]).epoch == 1)
        let failed = try host.lastReport().volumes[1]
        #expect(failed.name == "second" && failed.state == .failed && failed.epoch == nil)
        #expect(failed.lastError?.contains("exited with status 1") == true, "\(failed.lastError ?? "")")
        #expect(once.stderr.contains("second"))

        let daemon = try ReconcilerDaemon(["--source", "file:\(host.epochFile)", "--config-directory", conf, "--poll", "3600",
                                           "--interval", "3600", "--retry-base", "0.1", "--retry-cap", "0.4",
                                           "--state", host.statePath], in: host.directory)
        try daemon.waitUntil("a second failed pass") { daemon.log.components(separatedBy: "retrying in").count > 2 }
        #expect(try headerState(host.backings[0]).epoch == 2)
        try FileManager.default.removeItem(atPath: broken)
        try daemon.waitUntil("the second volume at epoch 2") { try headerState(host.backings[2]).epoch == 2 }
        try daemon.waitUntil("a converged report") { try host.lastReport().converged }
        let status = try runBounded([productPath("epochfs"), "reconcile", "status", "--state", host.statePath])
        #expect(status.status == 0 && status.stdout.contains("cluster epoch    2"), "\(status.output)")
    }

    /// kill -9 at each named step of a pass (the crash point kills the reconciler itself
    /// with SIGKILL there), then a restart: every volume ends at the target, each rekey
    /// committed exactly once, none left between epochs.
    @Test(arguments: [("pass-start", 0), ("before-read:2", 1), ("before-rekey:2", 1), ("after-rekey:1", 1),
                      ("after-rekey:3", 3), ("pass-end", 3)])
    func aKilledReconcilerConvergesAfterARestart(step: String, rekeyedBeforeTheKill: Int) throws {
        let host = try Host()
        try host.commit(2)
        let killed = try host.reconcileOnce(environment: ["EPOCHFS_RECONCILE_CRASH_AT": step])
        #expect(killed.status == 128 + SIGKILL, "\(killed.output)")
        let between = try host.states()
        #expect(between.map(\.epoch) == (0..<3).map { $0 < rekeyedBeforeTheKill ? 2 : 1 }, "\(step)")
        #expect(between.map(\.sequence) == (0..<3).map { $0 < rekeyedBeforeTheKill ? 2 : 1 }, "\(step)")

        let restarted = try host.reconcileOnce()
        #expect(restarted.status == 0, "\(restarted.output)")
        let after = try host.states()
        #expect(after.map(\.epoch) == [2, 2, 2], "\(step)")
        #expect(after.map(\.sequence) == [2, 2, 2], "\(step): each rekey committed once")
        #expect(try host.lastReport().volumes.map { $0.state == .rekeyed } == (0..<3).map { $0 >= rekeyedBeforeTheKill })
    }

    @Test func specsAndBackoff() throws {
        #expect(try EtcdEndpoints.parse("127.0.0.1:2379/epochfs/epoch") == (["http://127.0.0.1:2379"], "epochfs/epoch"))
        let (endpoints, key) = try EtcdEndpoints.parse("http://10.0.0.1:2379,127.0.0.2:2379//e")
        #expect(endpoints == ["http://10.0.0.1:2379", "http://127.0.0.2:2379"] && key == "/e")
        #expect(throws: EpochSourceError.self) { try EtcdEndpoints.parse("127.0.0.1:2379") }
        #expect(throws: EpochSourceError.self) { try EpochSourceSpec.parse("http://x", poll: 1) }
        let usage = try runBounded([productPath("epochfs"), "reconcile", "--once", "--source", "bogus:x", "/nonexistent"])
        #expect(usage.status == 64 && usage.stderr.contains("expected file:PATH"), "\(usage.output)")
        var backoff = Backoff(base: 1, cap: 5)
        #expect((0..<5).map { _ in backoff.next() } == [1, 2, 4, 5, 5])
        backoff.reset()
        #expect(backoff.next() == 1)
    }
}
