import Foundation
import Glibc
import Support
import Testing

/// One scrape in the Prometheus text format, parsed strictly: every sample belongs to a family
/// with a TYPE line, every value is a number, no series appears twice.
struct Scrape {
    struct Sample: Hashable {
        let name: String
        let labels: [String: String]
    }

    var types: [String: String] = [:]
    var samples: [Sample: Double] = [:]

    init(_ text: String) throws {
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) where !line.isEmpty {
            if line.hasPrefix("# TYPE ") {
                let words = line.split(separator: " ")
                guard words.count == 4, ["counter", "gauge", "histogram"].contains(words[3]) else { throw TestFailure("bad TYPE: \(line)") }
                types[String(words[2])] = String(words[3])
                continue
            }
            if line.hasPrefix("# HELP ") { continue }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                throw TestFailure("bad sample: \(line)")
            }
            let series = line[..<space]
            var name = String(series), labels: [String: String] = [:]
            if let open = series.firstIndex(of: "{") {
                guard series.hasSuffix("}") else { throw TestFailure("bad labels: \(line)") }
                name = String(series[..<open])
                for pair in series[series.index(after: open)..<series.index(before: series.endIndex)].split(separator: ",") {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    guard parts.count == 2, parts[1].hasPrefix("\""), parts[1].hasSuffix("\""), parts[1].count >= 2 else {
                        throw TestFailure("bad label: \(line)")
                    }
                    labels[String(parts[0])] = String(parts[1].dropFirst().dropLast())
                }
            }
            let family = ["_bucket", "_sum", "_count"].first { name.hasSuffix($0) && types[String(name.dropLast($0.count))] == "histogram" }
                .map { String(name.dropLast($0.count)) } ?? name
            guard types[family] != nil else { throw TestFailure("no TYPE for \(name)") }
            let sample = Sample(name: name, labels: labels)
            guard samples.updateValue(value, forKey: sample) == nil else { throw TestFailure("series twice: \(line)") }
        }
    }

    /// The value of one series, the volume label left out.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.key.name == name && $0.key.labels.filter { $0.key != "volume" } == labels }?.value
    }
}

@Suite(.serialized) struct MetricsTests {
    /// Four writers with fsyncs, readers, a live rekey, a re-encryption and a tampered block:
    /// the metrics file and `epochfs status --prometheus` show each of them.
    @Test func aMountUnderLoadReportsWhatItDid() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let writers = 4, chunks = 32, chunk = 65_536
        DispatchQueue.concurrentPerform(iterations: writers) { writer in
            let fd = open(volume.path("file-\(writer)"), O_RDWR | O_CREAT, 0o644)
            defer { close(fd) }
            let bytes = [UInt8](repeating: UInt8(writer + 1), count: chunk)
            for index in 0..<chunks {
                #expect(bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, chunk, off_t(index * chunk)) } == chunk)
                if index % 8 == 7 { #expect(fsync(fd) == 0) }
            }
        }
        let written = Double(writers * chunks * chunk), fsyncs = Double(writers * chunks / 8)
        var read = 0
        for writer in 0..<writers { read += try readThrough(volume.path("file-\(writer)")).get().count }
        #expect(volume.control("rekey 2") == 0)
        #expect(volume.control("reencrypt start 1000") == 0)
        var reencryption: [String: Any] = [:]
        _ = try waitUntil(seconds: 120) {
            reencryption = try volume.status()["reencryption"] as? [String: Any] ?? [:]
            return reencryption["running"] as? Bool == false
        }
        #expect(reencryption["state"] as? String == "done", "\(reencryption)")
        // A flipped byte in the sealed block of a small file: its read is EIO, an authentication failure.
        try Data((0..<3000).map { UInt8(truncatingIfNeeded: $0) }).write(to: URL(fileURLWithPath: volume.path("victim")))
        let victim = try #require(backingFiles(volume).last)
        var sealed = [UInt8](try Data(contentsOf: URL(fileURLWithPath: victim)))
        sealed[sealed.count - 1] ^= 0x5a
        try Data(sealed).write(to: URL(fileURLWithPath: victim))
        #expect(isEIO(readPastTheKernelCache(volume.path("victim"))))

        let scrape = try Scrape(String(decoding: try #require(FileManager.default.contents(atPath: volume.path(".epochfs/metrics"))), as: UTF8.self))
        let volumeID = try #require(try volume.status()["volume_id"] as? String)
        #expect(scrape.samples.keys.allSatisfy { $0.labels["volume"] == volumeID })
        #expect(scrape.value("epochfs_bytes_total", ["operation": "write"]) ?? 0 >= written + 3000)
        #expect(scrape.value("epochfs_bytes_total", ["operation": "read"]) ?? 0 >= Double(read))
        #expect(scrape.value("epochfs_blocks_total", ["operation": "write"]) ?? 0 >= written / 4096)
        #expect(scrape.value("epochfs_requests_total", ["operation": "fsync"]) ?? 0 >= fsyncs)
        #expect(scrape.value("epochfs_request_duration_seconds_count", ["operation": "fsync"]) ?? 0 >= fsyncs)
        #expect(scrape.value("epochfs_request_duration_seconds_count", ["operation": "write"]) ?? 0 >= written / Double(chunk))
        #expect(scrape.value("epochfs_request_duration_seconds_bucket", ["operation": "fsync", "le": "+Inf"])
                    == scrape.value("epochfs_request_duration_seconds_count", ["operation": "fsync"]))
        #expect(scrape.value("epochfs_authentication_failures_total") ?? 0 >= 1)
        #expect(scrape.value("epochfs_request_errors_total", ["errno": "EIO"]) ?? 0 >= 1)
        #expect(scrape.value("epochfs_rekeys_total") == 1)
        #expect(scrape.value("epochfs_rekey_duration_seconds_count") == 1)
        #expect(scrape.value("epochfs_epoch") == 2)
        #expect(scrape.value("epochfs_reencryption_running") == 0)
        let blocksDone = try #require(scrape.value("epochfs_reencryption_blocks_done"))
        #expect(blocksDone > 0 && blocksDone == scrape.value("epochfs_reencryption_blocks_total"))
        #expect(scrape.types["epochfs_request_duration_seconds"] == "histogram" && scrape.types["epochfs_requests_total"] == "counter")

        // The CLI prints the same text; nothing was written since, so the byte counts agree.
        let printed = try volume.epochfs("status", "--prometheus", volume.mountpoint)
        #expect(printed.status == 0, "\(printed.stderr)")
        let again = try Scrape(printed.stdout)
        #expect(again.value("epochfs_bytes_total", ["operation": "write"]) == scrape.value("epochfs_bytes_total", ["operation": "write"]))
        #expect(again.value("epochfs_requests_total", ["operation": "open"]) ?? 0 > scrape.value("epochfs_requests_total", ["operation": "open"]) ?? 0)
    }

    /// `-o request_metrics=off` (what bench/RESULTS.md measures the request metrics' cost
    /// with): no request, byte or duration is counted; the volume's own counters still are.
    @Test func requestMetricsOffCountsNoRequest() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        volume.unmount()
        try volume.mount(options: ["request_metrics=off"])
        let bytes = [UInt8](repeating: 7, count: 10_000)
        try Data(bytes).write(to: URL(fileURLWithPath: volume.path("f")))
        #expect(try Data(contentsOf: URL(fileURLWithPath: volume.path("f"))) == Data(bytes))
        let scrape = try Scrape(String(decoding: try #require(FileManager.default.contents(atPath: volume.path(".epochfs/metrics"))), as: UTF8.self))
        #expect(scrape.value("epochfs_requests_total", ["operation": "write"]) == nil)
        #expect(scrape.value("epochfs_bytes_total", ["operation": "write"]) == nil)
        #expect(scrape.value("epochfs_request_duration_seconds_count", ["operation": "write"]) == nil)
        #expect(scrape.value("epochfs_blocks_total", ["operation": "write"]) ?? 0 >= 3)
        let refused = try volume.epochfs("mount", volume.backing, volume.mountpoint, "-o", "request_metrics=maybe")
        #expect(refused.status != 0 && refused.stderr.contains("request_metrics takes on or off"), "\(refused.output)")
    }
}
