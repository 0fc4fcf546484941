import Foundation
import Glibc
import Support
import Testing

/// What the kernel keeps of the mount (docs/MOUNTING.md, "What the kernel caches"): a regular
/// file's page cache across opens.
@Suite(.serialized) struct KernelCacheTests {
    /// The plaintext bytes the daemon has read for the kernel so far.
    func bytesReadByTheDaemon(_ volume: MountedVolume) throws -> Double {
        let text = String(decoding: try #require(FileManager.default.contents(atPath: volume.path(".epochfs/metrics"))), as: UTF8.self)
        return try #require(try Scrape(text).value("epochfs_bytes_total", ["operation": "read"]))
    }

    /// A file read once is read again, by a new open, from the kernel's page cache: no read
    /// reaches the daemon (keep_cache; without it, every open drops the file's pages).
    @Test func aFileReadOnceIsReadAgainFromTheKernelsCache() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let content = (0..<(16 * 4096)).map { _ in UInt8.random(in: 0...255) }
        let fd = open(volume.path("file"), O_RDWR | O_CREAT, 0o644)
        #expect(content.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } == content.count && fsync(fd) == 0)
        close(fd)
        #expect(try readPastTheKernelCache(volume.path("file")).get() == content)
        let before = try bytesReadByTheDaemon(volume)
        #expect(before >= Double(content.count))
        #expect(try readThrough(volume.path("file")).get() == content)
        #expect(try bytesReadByTheDaemon(volume) == before, "the second open read from the daemon")
    }
}
