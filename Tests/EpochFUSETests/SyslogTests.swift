import Foundation
import Glibc
import Support
import Testing

/// A daemonized mount (stderr /dev/null) logs each EIO to syslog with the plaintext path, the
/// block and the reason. The mount runs in a mount namespace of its own whose /dev (a tmpfs
/// with /dev/null, /dev/fuse and /dev/log) sends syslog to a socket this test owns.
@Suite struct SyslogTests {
    @Test func aTamperedBlockReadThroughADaemonizedMountIsLoggedToSyslog() throws {
        try requireTools([("/usr/bin/unshare", "util-linux")])
        let volume = try MountedVolume()
        defer { volume.destroy() }
        #expect(mkdir(volume.path("dir"), 0o755) == 0)
        let content = (0..<40_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try Data(content).write(to: URL(fileURLWithPath: volume.path("dir/tampered")))
        volume.unmount()
        let backingFile = try #require(FileManager.default.enumerator(atPath: volume.backing)?.compactMap { $0 as? String }.first { name in
            !name.contains("epochfs.") && ((try? FileManager.default.attributesOfItem(atPath: volume.backing + "/" + name)[.size]) as? Int ?? 0) > 40_000
        })
        let fd = open(volume.backing + "/" + backingFile, O_RDWR)
        var byte: UInt8 = 0
        #expect(pread(fd, &byte, 1, off_t(dataOffset + 3 * 4130 + 100)) == 1)
        byte ^= 1
        #expect(pwrite(fd, &byte, 1, off_t(dataOffset + 3 * 4130 + 100)) == 1)
        close(fd)

        let socketPath = volume.root + "/log.sock"
        let log = try LogSocket(path: socketPath)
        let script = """
            set -e
            mount -t tmpfs -o mode=755 epochfs-test-dev /dev
            mknod -m 666 /dev/null c 1 3
            mknod -m 666 /dev/fuse c 10 229
            ln -s "$1" /dev/log
            "$2" mount "$3" "$4"
            if cat "$4/dir/tampered" > /dev/null 2>&1; then echo "the tampered file read"; fi
            umount "$4"
            """
        let ran = try runBounded(["/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", "-c", script, "sh", socketPath,
                                  volume.binary, volume.backing, volume.mountpoint], seconds: 60)
        #expect(ran.status == 0 && ran.output.isEmpty, "\(ran.output)")
        #expect(waitUntil(seconds: 15) { ownerLockIsFree(volume.backing) }, "the daemon did not exit")
        let lines = log.received()
        let line = lines.first { $0.contains("integrity failure") }
        #expect(line?.contains("epochfs[") == true && line?.contains("path=/dir/tampered") == true
                    && line?.contains("block=3") == true && line?.contains("reason=") == true, "\(lines)")
    }
}

/// A Unix datagram socket bound at `path`, as /dev/log is, that keeps what is sent to it.
final class LogSocket {
    private let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() where index < buffer.count - 1 { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw TestFailure("bind \(path): \(errno)") }
    }

    deinit { close(fd) }

    /// Every datagram queued so far, without waiting.
    func received() -> [String] {
        var lines: [String] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            guard count > 0 else { return lines }
            lines.append(String(decoding: buffer.prefix(count), as: UTF8.self))
        }
    }
}
