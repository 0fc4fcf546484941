import Support
import Foundation
import Testing

/// Debian's etcd 3.4 with its data dir (and WAL dir) on epochfs mounts. Each test bounds
/// every wait, stops only the processes it started, and unmounts in teardown.
@Suite(.serialized) struct EtcdOnMountTests {
    /// Thousands of puts, a clean stop, then the WAL read back through the mount: it verifies
    /// and every key is in an entry.
    @Test(.timeLimit(.minutes(3))) func walOnTheMountHoldsEveryPut() throws {
        try requireTools(etcdTools)
        let directory = TemporaryDirectory()
        let volume = try MountedVolume(in: directory)
        let member = EtcdMember(.init(name: "solo"), dataDirectory: volume.mountpoint + "/etcd",
                                walDirectory: volume.mountpoint + "/etcd-wal", logDirectory: directory)
        try member.start()
        try member.waitHealthy()

        let loads = (0..<4).map { WriteLoad(port: member.endpoint.clientPort, prefix: "put-w\($0)", limit: 750) }
        let acknowledged = try loads.reduce(into: [String: String]()) { all, load in
            all.merge(try load.finish(stop: false)) { $1 }
            #expect(load.failureMessage == nil, "\(load.failureMessage ?? "")")
        }
        #expect(acknowledged.count == 3000)
        #expect(member.stop() == 143, "etcd did not stop cleanly: \(member.logTail)")

        let verify = try volume.epochfs("wal", "verify", member.walPath, "--mount", volume.mountpoint)
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(verify.stdout.contains("end         clean end"), "\(verify.stdout)")

        let json = try volume.epochfs("wal", "dump", member.walPath, "--mount", volume.mountpoint, "--json")
        #expect(json.status == 0, "\(json.stderr)")
        var found = Set<String>()
        for line in json.stdout.split(separator: "\n") {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
            let data = (object["data"] as? String).flatMap { Data(base64Encoded: $0) } ?? Data()
            found.formUnion(keys(in: [UInt8](data), marker: "put-w", length: WriteLoad.key("put-w0", 0).utf8.count))
        }
        let missing = Set(acknowledged.keys).subtracting(found)
        #expect(missing.isEmpty, "\(missing.count) keys not in the WAL, e.g. \(missing.sorted().prefix(5))")

        let text = try volume.epochfs("wal", "dump", member.walPath, "--mount", volume.mountpoint)
        #expect(text.status == 0, "\(text.stderr)")
        let textKeys = keys(in: Array(text.stdout.utf8), marker: "put-w", length: WriteLoad.key("put-w0", 0).utf8.count)
        #expect(textKeys == found)
    }

    /// kill -9 in the middle of a write load; after a restart every acknowledged put is there,
    /// and the WAL (torn tail or not) verifies.
    @Test(.timeLimit(.minutes(3))) func killedEtcdKeepsEveryAcknowledgedPut() throws {
        try requireTools(etcdTools)
        let directory = TemporaryDirectory()
        let volume = try MountedVolume(in: directory)
        let member = EtcdMember(.init(name: "crash"), dataDirectory: volume.mountpoint + "/etcd",
                                logDirectory: directory)
        try member.start()
        try member.waitHealthy()

        let loads = (0..<3).map { WriteLoad(port: member.endpoint.clientPort, prefix: "kill-w\($0)", limit: 100_000) }
        let loaded = waitUntil(seconds: 60) { loads.reduce(0) { $0 + $1.acknowledgedCount } >= 1500 }
        #expect(member.kill9() == 137)
        try #require(loaded, "the write load did not reach 1500 puts: \(loads.compactMap(\.failureMessage))")
        let acknowledged = try loads.reduce(into: [String: String]()) { $0.merge(try $1.finish()) { $1 } }

        try restartHoldingEveryPut(member, acknowledged, prefix: "kill-", volume: volume)
    }

    /// Starts `member` again and expects every acknowledged put there, a clean stop and a WAL
    /// that verifies.
    private func restartHoldingEveryPut(_ member: EtcdMember, _ acknowledged: [String: String], prefix: String,
                                        volume: MountedVolume) throws {
        try member.start()
        try member.waitHealthy()
        let stored = try member.client.range(prefix: prefix)
        let lost = acknowledged.filter { stored[$0.key] != $0.value }
        #expect(lost.isEmpty, "\(lost.count) of \(acknowledged.count) acknowledged puts lost, e.g. \(lost.keys.sorted().prefix(5))")
        #expect(member.stop() == 143, "\(member.logTail)")
        let verify = try volume.epochfs("wal", "verify", member.walPath, "--mount", volume.mountpoint)
        #expect(verify.status == 0, "\(verify.stderr)")
    }

    /// The backing disk fills up under etcd: puts stop succeeding (etcd may stop itself), and
    /// once the disk has room again etcd starts and holds every put it acknowledged.
    @Test(.timeLimit(.minutes(4))) func aFullBackingDiskLosesNoAcknowledgedPut() throws {
        try requireTools(etcdTools)
        let directory = TemporaryDirectory()
        let disk = try SmallDisk(megabytes: 200)
        let volume = try MountedVolume(on: disk)
        defer {
            volume.destroy()
            withExtendedLifetime(disk) {}
        }
        let member = EtcdMember(.init(name: "full"), dataDirectory: volume.mountpoint + "/etcd", logDirectory: directory)
        try member.start()
        try member.waitHealthy()
        disk.fill()
        disk.makeRoom(3 << 20) // a few MiB, for some hundreds of puts before the disk is full

        let loads = (0..<3).map { WriteLoad(port: member.endpoint.clientPort, prefix: "full-w\($0)", limit: 20_000, padding: 2048) }
        let refused = waitUntil(seconds: 120) { loads.allSatisfy { $0.failureMessage != nil } }
        let acknowledged = try loads.reduce(into: [String: String]()) { $0.merge(try $1.finish()) { $1 } }
        try #require(refused, "etcd took every put on a full disk: the test filled nothing (\(acknowledged.count) puts)")
        _ = member.kill9() // it may have stopped by itself already
        #expect(acknowledged.count > 100, "\(acknowledged.count) puts before the disk was full")

        disk.makeRoom(100 << 20) // as an operator would: grow the disk, or free space on it
        try restartHoldingEveryPut(member, acknowledged, prefix: "full-", volume: volume)
    }

    /// Two live rekeys through the control file while etcd writes; all data stays readable,
    /// on the live mount and after a remount, and status shows the new epoch.
    @Test(.timeLimit(.minutes(3))) func rekeyWhileEtcdWrites() throws {
        try requireTools(etcdTools)
        let directory = TemporaryDirectory()
        let volume = try MountedVolume(in: directory)
        let member = EtcdMember(.init(name: "rekey"), dataDirectory: volume.mountpoint + "/etcd",
                                logDirectory: directory)
        try member.start()
        try member.waitHealthy()

        let loads = (0..<2).map { WriteLoad(port: member.endpoint.clientPort, prefix: "rekey-w\($0)", limit: 100_000) }
        let written = { loads.reduce(0) { $0 + $1.acknowledgedCount } }
        for (epoch, threshold) in [(UInt32(2), 400), (3, 800)] {
            try #require(waitUntil(seconds: 60) { written() >= threshold }, "\(loads.compactMap(\.failureMessage))")
            let errno = volume.control("rekey \(epoch)")
            let lastError = (try? volume.status()["last_error"]).flatMap { $0 as? String } ?? "none"
            try #require(errno == 0, "rekey \(epoch): errno \(errno), last error \(lastError)")
        }
        try #require(waitUntil(seconds: 60) { written() >= 1200 }, "\(loads.compactMap(\.failureMessage))")
        let acknowledged = try loads.reduce(into: [String: String]()) { $0.merge(try $1.finish()) { $1 } }
        #expect(loads.allSatisfy { $0.failureMessage == nil }, "\(loads.compactMap(\.failureMessage))")

        let status = try volume.status()
        #expect(status["epoch"] as? Int == 3)
        let keyring = (status["keyring"] as? [[String: Any]] ?? []).map { "\($0["epoch"] ?? "?") \($0["state"] ?? "?")" }
        #expect(keyring == ["1 read-only", "2 read-only", "3 active"])
        #expect(status["last_error"] is NSNull, "\(status)")

        let live = try member.client.range(prefix: "rekey-")
        #expect(acknowledged.filter { live[$0.key] != $0.value }.isEmpty)
        #expect(member.stop() == 143, "\(member.logTail)")

        volume.unmount()
        try volume.mount()
        try member.start()
        try member.waitHealthy()
        let remounted = try member.client.range(prefix: "rekey-")
        let lost = acknowledged.filter { remounted[$0.key] != $0.value }
        #expect(lost.isEmpty, "\(lost.count) puts unreadable after remount, e.g. \(lost.keys.sorted().prefix(5))")
        #expect(member.stop() == 143, "\(member.logTail)")
        let verify = try volume.epochfs("wal", "verify", member.walPath, "--mount", volume.mountpoint)
        #expect(verify.status == 0, "\(verify.stderr)")
    }

    /// Three members, each on its own mount: one is killed -9, the other two keep serving
    /// writes, and the restarted member catches up and serves writes again.
    @Test(.timeLimit(.minutes(3))) func threeMemberClusterSurvivesAKilledMember() throws {
        try requireTools(etcdTools)
        let directory = TemporaryDirectory()
        let endpoints = (0..<3).map { EtcdMember.Endpoint(name: "m\($0)") }
        let volumes = try endpoints.map { try MountedVolume(in: directory, name: $0.name) }
        let members = zip(endpoints, volumes).map { endpoint, volume in
            EtcdMember(endpoint, cluster: endpoints, dataDirectory: volume.mountpoint + "/etcd", logDirectory: directory)
        }
        for member in members { try member.start() }
        for member in members { try member.waitHealthy() }

        let before = try WriteLoad(port: members[0].endpoint.clientPort, prefix: "clus-a", limit: 300).finish(stop: false)
        #expect(before.count == 300)
        #expect(members[2].kill9() == 137)
        // Killing the leader costs an election: puts are retried through it, as clients do.
        let during = WriteLoad(port: members[0].endpoint.clientPort, prefix: "clus-b", limit: 300, retrySeconds: 15)
        let duringPuts = try during.finish(stop: false)
        #expect(duringPuts.count == 300, "writes with one member down: \(during.failureMessage ?? "")")

        try members[2].start()
        try members[2].waitHealthy()
        let expected = before.merging(duringPuts) { $1 }
        var caughtUp: [String: String] = [:]
        let synced = try waitUntil(seconds: 60) {
            caughtUp = try members[2].client.range(prefix: "clus-", serializable: true)
            return expected.allSatisfy { caughtUp[$0.key] == $0.value }
        }
        #expect(synced, "the restarted member has \(caughtUp.count) of \(expected.count) keys")
        let after = try WriteLoad(port: members[2].endpoint.clientPort, prefix: "clus-c", limit: 100).finish(stop: false)
        #expect(after.count == 100)
        for (member, volume) in zip(members, volumes) {
            #expect(member.stop() == 143, "\(member.logTail)")
            let verify = try volume.epochfs("wal", "verify", member.walPath, "--mount", volume.mountpoint)
            #expect(verify.status == 0, "\(member.endpoint.name): \(verify.stderr)")
        }
    }
}

/// Every `length`-byte key that starts with `marker` in `bytes`.
private func keys(in bytes: [UInt8], marker: String, length: Int) -> Set<String> {
    let pattern = Array(marker.utf8)
    var found = Set<String>()
    var position = 0
    while position + length <= bytes.count {
        if bytes[position] == pattern[0], bytes[position..<position + pattern.count].elementsEqual(pattern) {
            found.insert(String(decoding: bytes[position..<position + length], as: UTF8.self))
            position += length
        } else {
            position += 1
        }
    }
    return found
}
