import CLinux
import Foundation
import Glibc
import Support
import Testing

/// FUSE over io_uring (issue 22 item 1): where the kernel offers it, the mount's requests go
/// through the rings and are answered as on /dev/fuse; `-o io_uring=off` keeps them on /dev/fuse.
@Suite(.serialized) struct TransportTests {
    func transport(_ volume: MountedVolume) throws -> (kind: String, ringRequests: Int) {
        let transport = try volume.status()["transport"] as? [String: Any]
        return (transport?["kind"] as? String ?? "", transport?["ring_requests"] as? Int ?? -1)
    }

    /// Creates, writes (several sizes, up to 1 MiB per request), syncs, reads back, lists,
    /// renames, sets and reads an xattr, and removes: a mix of the requests the kernel sends.
    func exercise(_ volume: MountedVolume) throws {
        try FileManager.default.createDirectory(atPath: volume.path("dir"), withIntermediateDirectories: false)
        var expected: [String: Data] = [:]
        for (index, size) in [0, 1, 4095, 4096, 65_537, 1 << 20, 3 << 20].enumerated() {
            let data = Data((0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) })
            let path = volume.path("dir/file\(index)")
            let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
            #expect(fd >= 0)
            let written = data.withUnsafeBytes { write(fd, $0.baseAddress, size) }
            #expect(written == size)
            #expect(fsync(fd) == 0)
            close(fd)
            expected["file\(index)"] = data
        }
        #expect(rename(volume.path("dir/file0"), volume.path("dir/renamed")) == 0)
        expected["renamed"] = expected.removeValue(forKey: "file0")
        let listed = try FileManager.default.contentsOfDirectory(atPath: volume.path("dir"))
        #expect(Set(listed) == Set(expected.keys))
        for (name, data) in expected {
            #expect(FileManager.default.contents(atPath: volume.path("dir/" + name)) == data, "\(name)")
        }
        let value = Array("ring".utf8)
        #expect(epochfs_setxattr(volume.path("dir/renamed"), "user.transport", value, UInt(value.count), 0) == 0)
        var read = [UInt8](repeating: 0, count: 16)
        #expect(epochfs_getxattr(volume.path("dir/renamed"), "user.transport", &read, UInt(read.count)) == value.count)
        #expect(Array(read.prefix(value.count)) == value)
        for name in expected.keys { #expect(unlink(volume.path("dir/" + name)) == 0) }
        #expect(rmdir(volume.path("dir")) == 0)
    }

    @Test(.enabled(if: FUSETransport.enableRing(), "the kernel's FUSE over io_uring is off and cannot be turned on"))
    func requestsGoThroughTheRingsAndAreAnsweredAsOnDevFuse() throws {
        let volume = try MountedVolume(mountOptions: ["io_uring=on"])
        defer { volume.destroy() }
        let before = try transport(volume)
        try exercise(volume)
        let after = try transport(volume)
        #expect(after.kind == "io_uring")
        // At least a create, write, fsync, release, lookup and read per file and more besides.
        #expect(after.ringRequests - before.ringRequests >= 40, "\(before) → \(after)")
        let text = try volume.epochfs("status", volume.mountpoint).stdout
        #expect(text.contains("transport     io_uring ("), "\(text)")
        volume.unmount()
        #expect(!volume.mountLog.contains("error"), "\(volume.mountLog)")
    }

    @Test(.enabled(if: FUSETransport.enableRing(), "the kernel's FUSE over io_uring is off and cannot be turned on"))
    func ioUringOffServesDevFuse() throws {
        let volume = try MountedVolume(mountOptions: ["io_uring=off"])
        defer { volume.destroy() }
        try exercise(volume)
        let served = try transport(volume)
        #expect(served.kind == "dev_fuse")
        #expect(served.ringRequests == 0)
        let text = try volume.epochfs("status", volume.mountpoint).stdout
        #expect(text.contains("transport     /dev/fuse\n"), "\(text)")
        #expect(!volume.mountLog.contains("io_uring"), "\(volume.mountLog)")
    }

    @Test func aBadIoUringValueIsAUsageError() throws {
        let directory = TemporaryDirectory()
        let result = try run(productPath("epochfs"), ["mount", directory.path, directory.path, "-f", "-o", "ro,io_uring=maybe"])
        #expect(result.status == 64)
        #expect(result.stderr.contains("io_uring takes on or off"), "\(result.stderr)")
    }
}
