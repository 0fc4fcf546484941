import EpochCrypto
import EpochVolume
import EpochWAL
import Foundation
import Support
import Testing

/// A log written by `WALWriter` over several 2 KiB segments: a conf change and clear
/// proposals up to the cutover 5, a leader no-op at 6, then proposals 7...80 wrapped under
/// `wrapper`'s key.
struct WrappedLog {
    static let cutover: UInt64 = 5
    static let lastIndex: UInt64 = 80

    let walDirectory: String
    /// The entries as the application wrote them (what `dump` shows once opened).
    let plain: [RaftEntry]
    /// The entries as stored.
    let stored: [RaftEntry]
    let segments: [String]

    init(in directory: TemporaryDirectory, wrapper: RaftPayloadWrapper) throws {
        walDirectory = directory.path + "/wal"
        var plain = [RaftEntry(type: .confChange, term: 1, index: 1, data: [0x08, 0x01, 0x10, 0x07])]
        for index in 2...Self.lastIndex {
            // Every byte value, at an offset that moves with the index, then a long printable run.
            let payload = Array("put key-\(index) \\ value-\(index) ".utf8) + [0x00, 0x7f, 0xff, UInt8(index)]
                + (0..<256).map { UInt8(($0 + Int(index) * 37) % 256) } + Array(String(repeating: "printable ", count: 4).utf8)
            plain.append(RaftEntry(term: 2, index: index, data: index == 6 ? [] : proposalData(requestID: 1000 + index, payload)))
        }
        stored = try plain.map { entry in
            var stored = entry
            if entry.index > Self.cutover, entry.type == .normal, !entry.data.isEmpty { stored.data = try wrapper.wrap(entry.data) }
            return stored
        }
        self.plain = plain
        let writer = try WALWriter(directory: walDirectory, metadata: Array("epochfs test".utf8),
                                   options: .init(segmentSize: 2048, sync: false))
        for batch in stride(from: 0, to: stored.count, by: 4) {
            let entries = Array(stored[batch..<min(batch + 4, stored.count)])
            try writer.save(hardState: HardState(term: 2, vote: 1, commit: entries.last!.index), entries: entries)
        }
        try writer.close()
        segments = writer.segments.map(\.fileName)
    }

    /// `dump`'s text line for an entry: printable ASCII but `\` kept, the rest as `\xNN`.
    static func textLine(_ entry: RaftEntry) -> String {
        let data = entry.data.map { byte in
            (0x20..<0x7f).contains(byte) && byte != 0x5c ? String(UnicodeScalar(byte)) : String(format: "\\x%02x", byte)
        }.joined()
        return "\(entry.index) \(entry.term) \(entry.type) \(data)"
    }
}

/// `0x01 ‖ request id BE64 ‖ payload`: the proposal layout's clear header.
func proposalData(requestID: UInt64, _ payload: [UInt8]) -> [UInt8] {
    [0x01] + withUnsafeBytes(of: requestID.bigEndian) { Array($0) } + payload
}

/// Byte offsets of the frames of a segment file.
func frameOffsets(_ bytes: [UInt8]) -> [Int] {
    var offsets: [Int] = []
    var offset = 0
    while offset + 8 <= bytes.count {
        let word = bytes[offset..<offset + 8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        if word == 0 { break }
        let length = Int(word & 0x00ff_ffff_ffff_ffff)
        offsets.append(offset)
        offset += 8 + length + (8 - length % 8) % 8
    }
    return offsets
}

private func randomKey() -> [UInt8] { (0..<32).map { _ in UInt8.random(in: 0...255) } }

private func hexString(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

private func epochfs(_ arguments: [String]) throws -> CommandResult {
    try runBounded([epochfsPath] + arguments, seconds: 60)
}

@Suite struct WALCommandTests {
    @Test func dumpOpensEntriesWithRawKeyFiles() throws {
        let directory = TemporaryDirectory()
        let key = randomKey()
        let wrapper = try RaftPayloadWrapper(keyID: 2, raftDEK: AESGCMKey(SecretBytes(copying: key)))
        let log = try WrappedLog(in: directory, wrapper: wrapper)
        #expect(log.segments.count >= 3)
        // One key file in hex with a newline, one raw; the raw one's id is never used.
        try (hexString(key) + "\n").write(toFile: directory.path + "/raft2.key", atomically: true, encoding: .utf8)
        try Data(randomKey()).write(to: URL(fileURLWithPath: directory.path + "/raft9.key"))
        let keyOptions = ["--raft-key", "2:\(directory.path)/raft2.key", "--raft-key", "9:\(directory.path)/raft9.key",
                          "--cutover", String(WrappedLog.cutover)]

        let text = try epochfs(["wal", "dump", log.walDirectory] + keyOptions)
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.split(separator: "\n").map(String.init) == log.plain.map(WrappedLog.textLine))
        #expect(text.stderr.isEmpty)

        let json = try epochfs(["wal", "dump", log.walDirectory, "--json"] + keyOptions)
        #expect(json.status == 0, "\(json.stderr)")
        let objects = try json.stdout.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        try #require(objects.count == log.plain.count)
        for (object, entry) in zip(objects, log.plain) {
            #expect(object["index"] as? UInt64 == entry.index)
            #expect(object["term"] as? UInt64 == entry.term)
            #expect(object["type"] as? String == entry.type.description)
            #expect((object["data"] as? String).flatMap { Data(base64Encoded: $0) } == Data(entry.data), "entry \(entry.index)")
            let wrapped = entry.index > WrappedLog.cutover && !entry.data.isEmpty
            #expect(object["key_id"] as? UInt32 == (wrapped ? 2 : nil), "entry \(entry.index)")
            #expect(object["request_id"] as? UInt64 == (wrapped ? 1000 + entry.index : nil), "entry \(entry.index)")
        }
        for output in [text.stdout, text.stderr, json.stdout, json.stderr] {
            #expect(!output.contains(hexString(key)) && !output.contains(Data(key).base64EncodedString()))
        }

        // Without --cutover the raw keys leave the gate inert: the stored bytes come out.
        let inert = try epochfs(["wal", "dump", log.walDirectory, "--raft-key", "2:\(directory.path)/raft2.key"])
        #expect(inert.status == 0, "\(inert.stderr)")
        #expect(inert.stdout.split(separator: "\n").map(String.init) == log.stored.map(WrappedLog.textLine))
    }

    @Test func cutoverAndKeysComeFromTheVolume() throws {
        let directory = TemporaryDirectory()
        let keyFile = directory.path + "/keys/1.key"
        try FileManager.default.createDirectory(atPath: directory.path + "/keys", withIntermediateDirectories: true)
        try Data(randomKey()).write(to: URL(fileURLWithPath: keyFile))
        let backing = directory.path + "/backing"
        _ = try Volume.create(backing: backing, keySource: "file:\(directory.path)/keys/%d.key", epoch: 1, blockSize: 4096)
        let header = try Volume.journal(backing: backing).setRaftCutover(WrappedLog.cutover)
        let raftDEK = try #require(try header.keyring.keys(for: 1).raftDEK)
        let log = try WrappedLog(in: directory, wrapper: try RaftPayloadWrapper(keyID: 1, raftDEK: AESGCMKey(raftDEK)))

        let dump = try epochfs(["wal", "dump", log.walDirectory, "--backing", backing])
        #expect(dump.status == 0, "\(dump.stderr)")
        #expect(dump.stdout.split(separator: "\n").map(String.init) == log.plain.map(WrappedLog.textLine))
        let raftKeyHex = raftDEK.withUnsafeBytes { hexString(Array($0)) }
        #expect(!dump.stdout.contains(raftKeyHex))

        let verify = try epochfs(["wal", "verify", log.walDirectory, "--backing", backing])
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(verify.stdout.contains("unwrapped   \(WrappedLog.lastIndex - 6) (cutover 5, layout proposal)"), "\(verify.stdout)")
        #expect(verify.stdout.contains("entries     \(WrappedLog.lastIndex) (index 1...\(WrappedLog.lastIndex);"))
        #expect(verify.stdout.hasSuffix("ok\n"))

        // --cutover overrides the volume's: above the last index nothing is opened.
        let overridden = try epochfs(["wal", "dump", log.walDirectory, "--backing", backing, "--cutover", String(WrappedLog.lastIndex), "--json"])
        #expect(overridden.status == 0, "\(overridden.stderr)")
        #expect(!overridden.stdout.contains("key_id"))
        #expect(overridden.stdout.split(separator: "\n").count == Int(WrappedLog.lastIndex))

        // Below the real cutover, entry 4 is clear data, not an envelope: the reader stops there.
        let tooLow = try epochfs(["wal", "verify", log.walDirectory, "--backing", backing, "--cutover", "3"])
        #expect(tooLow.status == 1)
        #expect(tooLow.stderr.hasPrefix("epochfs: entry index 4 above the cutover did not open"), "\(tooLow.stderr)")
        #expect(tooLow.stderr.contains("\(log.segments[0]) at offset"))
        #expect(tooLow.stderr.contains("last delivered index 3"))
        #expect(tooLow.stdout.isEmpty)
    }

    @Test func wrongKeyStopsAtTheFirstWrappedEntry() throws {
        let directory = TemporaryDirectory()
        let wrapper = try RaftPayloadWrapper(keyID: 2, raftDEK: AESGCMKey(SecretBytes(copying: randomKey())))
        let log = try WrappedLog(in: directory, wrapper: wrapper)
        try Data(randomKey()).write(to: URL(fileURLWithPath: directory.path + "/wrong.key"))
        let options = ["--raft-key", "2:\(directory.path)/wrong.key", "--cutover", "5"]

        let dump = try epochfs(["wal", "dump", log.walDirectory] + options)
        #expect(dump.status == 1)
        // Everything up to the failing entry is printed, nothing after it.
        #expect(dump.stdout.split(separator: "\n").map(String.init) == log.plain.prefix(6).map(WrappedLog.textLine))
        #expect(dump.stderr.contains("entry index 7 above the cutover did not open: envelope under key id 2 failed authentication"),
                "\(dump.stderr)")

        let verify = try epochfs(["wal", "verify", log.walDirectory] + options)
        #expect(verify.status == 1)
        #expect(verify.stderr.contains("entry index 7") && verify.stderr.contains("last delivered index 6"))

        // No keys at all and no cutover: structure and CRCs only, which hold.
        let plain = try epochfs(["wal", "verify", log.walDirectory])
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(plain.stdout.contains("unwrapped   0 (cutover none (inert)"))
        // The chained CRC the reader ends with, and how it was computed.
        let crc = try WALReader(directory: log.walDirectory, gate: CutoverGate()).verify().crc
        #expect(plain.stdout.contains("\ncrc         0x\(String(crc, radix: 16)) (\(CRC32C.usesHardware ? "SSE4.2" : "table"))\n"),
                "\(plain.stdout)")
    }

    @Test func corruptSegmentNamesSegmentOffsetAndIndex() throws {
        let directory = TemporaryDirectory()
        let wrapper = try RaftPayloadWrapper(keyID: 2, raftDEK: AESGCMKey(SecretBytes(copying: randomKey())))
        let log = try WrappedLog(in: directory, wrapper: wrapper)
        let segment = log.segments[1]
        let path = log.walDirectory + "/" + segment
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let frames = frameOffsets(bytes)
        try #require(frames.count > 6)
        // The middle of the fifth frame: inside an entry's data.
        bytes[(frames[4] + frames[5]) / 2] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: path))

        let verify = try epochfs(["wal", "verify", log.walDirectory])
        #expect(verify.status == 1)
        #expect(verify.stderr.hasPrefix("epochfs: corrupt WAL: record crc mismatch"), "\(verify.stderr)")
        #expect(verify.stderr.contains("in \(segment) at offset \(frames[4]) (after entry index"), "\(verify.stderr)")
        #expect(verify.stdout.isEmpty)

        let dump = try epochfs(["wal", "dump", log.walDirectory])
        #expect(dump.status == 1)
        #expect(dump.stderr.contains("\(segment) at offset \(frames[4])"))
        #expect(!dump.stdout.isEmpty)
    }

    /// Cluster members made by `epochfs init --cluster-id` (docs/FORMAT.md §3.7), one reading
    /// its passphrases from stdin and one from files, rekeyed by `epochfs rekey`: `wal verify`
    /// on one opens what the other's raft key sealed; a volume without the cluster id does not.
    @Test func clusterMembersOpenEachOthersEntries() throws {
        let directory = TemporaryDirectory()
        directory.write(Array("correct horse\n".utf8), to: "pass1")
        directory.write(Array("battery staple\n".utf8), to: "pass2")
        let files = "passphrase:\(directory.path)/pass%d"
        let cluster = ["--cluster-id", "etcd-prod-7"]
        let (stdinMember, fileMember, outsider) = (directory.path + "/a", directory.path + "/b", directory.path + "/c")
        for (arguments, stdin) in [(["init", stdinMember, "--key-source", "passphrase:-"] + cluster, "correct horse\n"),
                                   (["rekey", stdinMember, "2"], "correct horse\nbattery staple\n"),
                                   (["init", fileMember, "--key-source", files] + cluster, ""),
                                   (["rekey", fileMember, "2"], ""),
                                   (["init", outsider, "--key-source", files], ""),
                                   (["rekey", outsider, "2"], "")] {
            let result = try runBounded([epochfsPath] + arguments, stdin: stdin, seconds: 60)
            #expect(result.status == 0, "\(arguments): \(result.stderr)")
        }
        for backing in [fileMember, outsider] { _ = try Volume.journal(backing: backing).setRaftCutover(WrappedLog.cutover) }
        let leader = try Volume.journal(backing: stdinMember, keySourceOverride: files).open()
        let raftDEK = try #require(leader.keyring.active.raftDEK)
        let log = try WrappedLog(in: directory, wrapper: try RaftPayloadWrapper(keyID: 2, raftDEK: AESGCMKey(raftDEK)))

        let verify = try epochfs(["wal", "verify", log.walDirectory, "--backing", fileMember])
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(verify.stdout.contains("unwrapped   \(WrappedLog.lastIndex - 6) (cutover 5, layout proposal)"), "\(verify.stdout)")
        let stranger = try epochfs(["wal", "verify", log.walDirectory, "--backing", outsider])
        #expect(stranger.status == 1)
        #expect(stranger.stderr.contains("entry index 7 above the cutover did not open: envelope under key id 2 failed authentication"),
                "\(stranger.stderr)")
    }

    @Test func usageErrors() throws {
        let directory = TemporaryDirectory()
        let wal = directory.path + "/wal"
        for arguments in [["--mount", "/x", "--raft-key", "1:/k"], ["--key-source", "file:/k%d"], ["--raft-key", "0:/k"],
                          ["--raft-key", "/k"], ["--backing", "/b", "--raft-key", "1:/k"], ["--layout", "zip"]] {
            let result = try epochfs(["wal", "dump", wal] + arguments)
            #expect(result.status == 64, "\(arguments): \(result.stderr)")
        }
        try "not a key".write(toFile: directory.path + "/bad.key", atomically: true, encoding: .utf8)
        let badKey = try epochfs(["wal", "verify", wal, "--raft-key", "1:\(directory.path)/bad.key"])
        #expect(badKey.status == 1)
        #expect(badKey.stderr == "epochfs: raft key file \(directory.path)/bad.key: expected 32 raw bytes or 64 hex digits\n")
        let noSegments = try epochfs(["wal", "verify", directory.path])
        #expect(noSegments.status == 1)
        #expect(noSegments.stderr.contains("no WAL segments"))
        let notMounted = try epochfs(["wal", "verify", directory.path, "--mount", directory.path])
        #expect(notMounted.status == 1)
        #expect(notMounted.stderr.contains("not readable; is \(directory.path) an epochfs mount?"))
    }
}
