import Foundation
import Glibc
import Support
import Testing
@testable import EpochWAL

private let etcdPath = "/usr/bin/etcd"
private let etcdctlPath = "/usr/bin/etcdctl"
private let goPath = "/usr/bin/go"
private let etcdGoSources = "/usr/share/gocode/src/go.etcd.io/etcd/wal"

/// Real etcd and etcd's own WAL code as oracles (Debian: etcd-server, etcd-client; golang-go,
/// golang-etcd-server-dev). A missing tool fails the test: it never passes by skipping.
@Suite(.serialized) struct EtcdTests {
    /// Starts etcd 3.4 on loopback ports, puts 300 keys with etcdctl, stops it, and reads its
    /// WAL: every key is in an entry and the CRC chain holds.
    @Test(.timeLimit(.minutes(3)))
    func realEtcdWALReadsBack() throws {
        try requireTools([(etcdPath, "etcd-server"), (etcdctlPath, "etcd-client")])
        let directory = TemporaryDirectory()
        let clientPort = freeLoopbackPort()
        var peerPort = freeLoopbackPort()
        while peerPort == clientPort { peerPort = freeLoopbackPort() }
        let clientURL = "http://127.0.0.1:\(clientPort)"
        let peerURL = "http://127.0.0.1:\(peerPort)"
        let dataDirectory = directory.path + "/data"
        let etcd = try ChildProcess([etcdPath, "--name", "t1", "--data-dir", dataDirectory,
                                     "--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
                                     "--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
                                     "--initial-cluster", "t1=\(peerURL)"],
                                    stdoutPath: directory.file("etcd.log"), stderrPath: directory.file("etcd.log"))
        defer { etcd.stop() }

        let deadline = monotonicSeconds() + 30
        var healthy = false
        while !healthy, monotonicSeconds() < deadline {
            healthy = try runBounded([etcdctlPath, "--endpoints", clientURL, "--command-timeout=2s", "endpoint", "health"], seconds: 5).status == 0
            if !healthy { usleep(200_000) }
        }
        try #require(healthy, "etcd did not come up: \(etcd.stdout)")

        let keyCount = 300
        let puts = try runBounded(["/bin/sh", "-c", """
            i=1
            while [ $i -le \(keyCount) ]; do
              \(etcdctlPath) --endpoints \(clientURL) put epochfs-key-$i epochfs-value-$i >/dev/null || exit 1
              i=$((i + 1))
            done
            """], seconds: 120)
        try #require(puts.status == 0, "etcdctl put failed: \(puts.output)")
        // etcd shuts down on SIGTERM and then re-raises it: 128 + 15. SIGKILL would be 137.
        #expect(etcd.stop() == 143, "etcd did not stop cleanly: \(etcd.stdout)")

        let walDirectory = dataDirectory + "/member/wal"
        let (log, result) = readAll(walDirectory)
        let summary = try result.get()
        guard case .clean = summary.end else { Issue.record("end \(summary.end)"); return }
        #expect(summary.crc != 0)
        #expect(log.metadata.count == 1)
        #expect(summary.lastIndex ?? 0 >= UInt64(keyCount))
        #expect(log.hardStates.last?.commit == summary.lastIndex)
        // InternalRaftRequest{put=PutRequest{key=1, value=2}}: the key is followed by the value's tag.
        let entryData = log.replayed.map(\.data)
        let missing = (1...keyCount).filter { key in
            let pattern = Array("epochfs-key-\(key)".utf8) + [0x12]
            return !entryData.contains { contains($0, pattern) }
        }
        #expect(missing.isEmpty, "keys not found in the WAL: \(missing.prefix(10))")

        // etcd's own reader sees the same log.
        #expect(try GoOracle.build().dump(walDirectory) == oracleView(log))
    }

    /// etcd 3.4's own `wal.OpenForRead` + `ReadAll` and `wal.Verify` accept segments written by
    /// `WALWriter` (three segments, preallocated tail, wrapped and clear entries, a replaced
    /// range) and return the same log as `WALReader`, torn tail included.
    @Test(.timeLimit(.minutes(8)))
    func etcdReaderAcceptsWriterSegments() throws {
        let oracle = try GoOracle.build()
        let directory = TemporaryDirectory()
        let walDirectory = directory.path + "/wal"
        let wrapper = try RaftPayloadWrapper(keyID: 7, raftDEK: aesKey(KnownAnswer.raftDEK7))
        let writer = try WALWriter(directory: walDirectory, metadata: testMetadata,
                                   options: .init(segmentSize: 4096, preallocate: true, sync: false))
        try writer.save(hardState: HardState(term: 1, vote: 1, commit: 1),
                        entries: [RaftEntry(type: .confChange, term: 1, index: 1, data: [0x08, 0x01, 0x18, 0x01])])
        try writer.save(hardState: HardState(term: 2, vote: 1, commit: 2), entries: [RaftEntry(term: 2, index: 2)])
        for batch in 0..<10 {
            let entries = try (1...6).map { offset -> RaftEntry in
                let index = UInt64(3 + batch * 6 + offset - 1)
                return RaftEntry(term: 2, index: index, data: try wrapper.wrap(proposal(requestID: index, [UInt8](repeating: 0x61, count: 100))))
            }
            try writer.save(hardState: HardState(term: 2, vote: 1, commit: entries.last!.index), entries: entries)
        }
        try writer.save(hardState: HardState(term: 3, vote: 1, commit: 50), entries: sampleEntries(55...58, term: 3))
        try writer.close()
        #expect(writer.segments.count >= 3)

        let (log, result) = readAll(walDirectory)
        let summary = try result.get()
        #expect(summary.replacedEntries == 8)
        #expect(try oracle.verify(walDirectory))
        #expect(try oracle.dump(walDirectory) == oracleView(log))

        // A record cut short at the end of the last segment: both readers stop before it.
        let tail = walDirectory + "/" + writer.segments.last!.fileName
        let bytes = readFile(tail)
        let lastFrame = try #require(frameOffsets(bytes).last)
        writeFile(tail, Array(bytes[..<(lastFrame + 12)]))
        let (tornLog, tornResult) = readAll(walDirectory)
        guard case .torn = try tornResult.get().end else { Issue.record("not torn: \(tornResult)"); return }
        #expect(try oracle.dump(walDirectory) == oracleView(tornLog))
    }
}

/// The replayed log in the oracle's line format: `index term type hex(data)`, then the state.
private func oracleView(_ log: ReadLog) -> [String] {
    log.replayed.map { "\($0.index) \($0.term) \($0.type.rawValue) \($0.data.hexString)" }
        + ["state \(log.hardStates.last.map { "\($0.term) \($0.vote) \($0.commit)" } ?? "0 0 0")"]
}

private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard haystack.count >= needle.count else { return false }
    return (0...(haystack.count - needle.count)).contains { start in
        haystack[start..<start + needle.count].elementsEqual(needle)
    }
}

/// etcd's own reader: bench/etcd-wal-reader (a small Go program over Debian's etcd 3.4
/// sources, docs/FORMAT.md §11.7), built offline once per machine into /tmp.
struct GoOracle {
    static let buildRoot = "/tmp/epochfs-waloracle"
    static let sourceFile = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("bench/etcd-wal-reader/main.go").path
    let executable: String

    static func build() throws -> GoOracle {
        try requireTools([(goPath, "golang-go")])
        guard access(etcdGoSources, F_OK) == 0 else {
            throw TestFailure("missing \(etcdGoSources) (Debian package golang-etcd-server-dev); run mount-helpers/prepare-host.sh")
        }
        let oracle = GoOracle(executable: buildRoot + "/waloracle")
        let sourceDirectory = buildRoot + "/src/waloracle"
        let sourcePath = sourceDirectory + "/main.go"
        let source = readFile(sourceFile)
        if access(oracle.executable, X_OK) == 0, readFileIfPresent(sourcePath) == source { return oracle }
        for path in [buildRoot, buildRoot + "/src", sourceDirectory] { mkdir(path, 0o755) }
        writeFile(sourcePath, source)
        let scratch = TemporaryDirectory()
        let build = try runBounded([goPath, "build", "-o", oracle.executable, "waloracle"],
                                   environment: ["GO111MODULE": "off", "GOPATH": buildRoot + ":/usr/share/gocode",
                                                 "GOCACHE": buildRoot + "/cache", "GOFLAGS": "", "CGO_ENABLED": "0"],
                                   currentDirectory: scratch.path, seconds: 400)
        guard build.status == 0 else { throw OracleError(message: "go build failed: \(build.output)") }
        return oracle
    }

    func dump(_ walDirectory: String) throws -> [String] {
        let result = try runBounded([executable, "dump", walDirectory], seconds: 60)
        guard result.status == 0 else { throw OracleError(message: result.output) }
        return result.stdout.split(separator: "\n").map(String.init)
    }

    func verify(_ walDirectory: String) throws -> Bool {
        let result = try runBounded([executable, "verify", walDirectory], seconds: 60)
        if result.status != 0 { Issue.record("etcd's wal.Verify: \(result.output)") }
        return result.status == 0
    }
}

struct OracleError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

func readFileIfPresent(_ path: String) -> [UInt8]? { access(path, F_OK) == 0 ? readFile(path) : nil }
