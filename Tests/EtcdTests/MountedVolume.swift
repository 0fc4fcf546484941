import Support
import Foundation
import Glibc
import Testing

/// An epochfs volume with key files for epochs 1...3 prepared up front (`file:` key source),
/// mounted in the foreground by a child `epochfs mount` process.
final class MountedVolume {
    static let epochs: ClosedRange<UInt32> = 1...3

    let directory: TemporaryDirectory
    let name: String
    let backing: String
    let mountpoint: String
    let keysDirectory: String
    private var mountProcess: ChildProcess?

    init(in directory: TemporaryDirectory, name: String = "volume") throws {
        try requireTools([("/usr/bin/fusermount3", "fuse3")])
        guard access("/dev/fuse", R_OK | W_OK) == 0 else {
            throw TestFailure("/dev/fuse is missing; run mount-helpers/prepare-host.sh")
        }
        self.directory = directory
        self.name = name
        backing = directory.path + "/\(name)-backing"
        mountpoint = directory.path + "/\(name)-mnt"
        keysDirectory = directory.path + "/\(name)-keys"
        for path in [mountpoint, keysDirectory] {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        for epoch in Self.epochs {
            let key = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
            try (key + "\n").write(toFile: keyPath(epoch: epoch), atomically: true, encoding: .utf8)
        }
        let created = try runBounded([epochfsPath, "init", backing, "--key-source", "file:\(keysDirectory)/%d.key"],
                                     seconds: 30)
        guard created.status == 0 else { throw TestFailure("epochfs init failed: \(created.stderr)") }
        try mount()
    }

    deinit { unmount() }

    func keyPath(epoch: UInt32) -> String { keysDirectory + "/\(epoch).key" }

    /// Mounts and waits until the kernel lists the mount.
    func mount() throws {
        precondition(mountProcess == nil, "already mounted")
        let process = try ChildProcess([epochfsPath, "mount", backing, mountpoint, "-f"],
                                       stdoutPath: directory.file("\(name)-mount.out"), stderrPath: directory.file("\(name)-mount.err"))
        mountProcess = process
        guard waitUntil(seconds: 20, { isListedInMountinfo || !process.isRunning }), isListedInMountinfo else {
            unmount()
            throw TestFailure("epochfs mount did not appear in /proc/self/mountinfo: \(process.stderr)")
        }
    }

    /// `fusermount3 -u`, then waits for the mount process; SIGKILL and a lazy unmount if it hangs.
    func unmount() {
        guard let process = mountProcess else { return }
        mountProcess = nil
        if isListedInMountinfo { _ = try? runBounded(["/usr/bin/fusermount3", "-u", mountpoint], seconds: 20) }
        if process.wait(seconds: 20) == nil {
            process.kill9()
            _ = try? runBounded(["/usr/bin/fusermount3", "-uz", mountpoint], seconds: 20)
        }
    }

    var mountLog: String { mountProcess?.stderr ?? "" }

    var isListedInMountinfo: Bool {
        let mountinfo = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        return mountinfo.split(separator: "\n").contains { $0.split(separator: " ").dropFirst(4).first == Substring(mountpoint) }
    }

    /// One command to `.epochfs/control`; the write's errno is the answer.
    func control(_ command: String) throws {
        let path = mountpoint + "/.epochfs/control"
        let descriptor = open(path, O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw TestFailure("open \(path): \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        let bytes = Array(command.utf8)
        guard write(descriptor, bytes, bytes.count) == bytes.count else {
            throw TestFailure("control '\(command)': \(String(cString: strerror(errno))); status: \(try statusText())")
        }
    }

    func statusText() throws -> String { try String(contentsOfFile: mountpoint + "/.epochfs/status", encoding: .utf8) }

    func status() throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(try statusText().utf8)) as? [String: Any] ?? [:]
    }

    /// `epochfs ARGUMENTS...`, bounded in time.
    func epochfs(_ arguments: String...) throws -> CommandResult {
        try runBounded([epochfsPath] + arguments, seconds: 120)
    }
}
