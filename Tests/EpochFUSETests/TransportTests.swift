import CLinux
import Dispatch
import Foundation
import Glibc
import Support
import Synchronization
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

    /// A request that waits in the daemon holds up no other request made on the same CPU: a
    /// rekey through the control file whose key command waits for the test, and then a mkdir,
    /// both from threads bound to CPU 0 (so both in the kernel's ring queue 0). The mkdir is
    /// answered while the rekey still waits; one thread serving the queue would answer it only
    /// after the key command was killed at its time limit, failing the rekey.
    @Test(.enabled(if: FUSETransport.enableRing(), "the kernel's FUSE over io_uring is off and cannot be turned on"))
    func aRequestThatWaitsHoldsUpNoOtherOfItsCPU() throws {
        let directory = TemporaryDirectory()
        let fifo = directory.path + "/key2", started = directory.path + "/started", script = directory.path + "/key.sh"
        #expect(mkfifo(fifo, 0o600) == 0)
        let keys = directory.path + "/volume/keys"
        try """
            #!/bin/sh
            if [ "$1" = 2 ]; then : > \(started); exec cat \(fifo); fi
            exec cat \(keys)/$1.key
            """.write(toFile: script, atomically: true, encoding: .utf8)
        #expect(chmod(script, 0o755) == 0)
        let volume = try MountedVolume(in: directory, mountOptions: ["io_uring=on"], mountKeySource: "command:" + script)
        defer { volume.destroy() }

        let rekey = OnCPU0 { () -> Int in
            let fd = open(volume.path(".epochfs/control"), O_WRONLY)
            defer { close(fd) }
            return write(fd, "rekey 2\n", 8)
        }
        #expect(try waitUntil(seconds: 60) { access(started, F_OK) == 0 }, "the key command did not start")
        let made = OnCPU0 { mkdir(volume.path("made meanwhile"), 0o755) }
        #expect(made.result() == 0)
        #expect(!rekey.isDone, "the rekey ended before the mkdir was answered")

        // The key for epoch 2; no reader left (the command killed) gives ENXIO, not SIGPIPE.
        let writer = open(fifo, O_WRONLY | O_NONBLOCK)
        if writer >= 0 {
            let key = try Data(contentsOf: URL(fileURLWithPath: keys + "/2.key"))
            #expect(key.withUnsafeBytes { write(writer, $0.baseAddress, key.count) } == key.count)
            close(writer)
        }
        #expect(rekey.result() == 8)
        #expect(try volume.status()["epoch"] as? Int == 2)
    }

    @Test func aBadIoUringValueIsAUsageError() throws {
        let directory = TemporaryDirectory()
        let result = try run(productPath("epochfs"), ["mount", directory.path, directory.path, "-f", "-o", "ro,io_uring=maybe"])
        #expect(result.status == 64)
        #expect(result.stderr.contains("io_uring takes on or off"), "\(result.stderr)")
    }
}

/// sched_setaffinity(2), which Swift's Glibc module leaves out (it is a GNU extension).
private let setAffinity = unsafeBitCast(dlsym(nil, "sched_setaffinity")!,
                                        to: (@convention(c) (pid_t, Int, UnsafeRawPointer) -> Int32).self)

/// `body` on a thread of its own bound to CPU 0; `result()` waits for what it returned.
private final class OnCPU0<Result: Sendable>: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let finished = Mutex<Result?>(nil)

    init(_ body: @escaping @Sendable () -> Result) {
        let thread = Thread { [self] in
            var cpus = cpu_set_t()
            withUnsafeMutableBytes(of: &cpus) { $0[0] = 1 }
            precondition(setAffinity(0, MemoryLayout<cpu_set_t>.size, &cpus) == 0)
            let result = body()
            finished.withLock { $0 = result }
            done.signal()
        }
        thread.start()
    }

    var isDone: Bool { finished.withLock { $0 != nil } }

    func result() -> Result {
        done.wait()
        done.signal()
        return finished.withLock { $0! }
    }
}
