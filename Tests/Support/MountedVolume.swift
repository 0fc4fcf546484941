import Foundation
import Glibc

/// The FUSE transport mounts are to use, from `EPOCHFS_TEST_TRANSPORT` (`scripts/test.sh` runs
/// the mount suites once on each): `dev_fuse` mounts with `-o io_uring=off`, `io_uring` checks
/// that the mount's requests go through the rings; unset, the daemon's default.
public enum FUSETransport: String, Sendable {
    case devFuse = "dev_fuse"
    case ioUring = "io_uring"

    public static var requested: FUSETransport? {
        ProcessInfo.processInfo.environment["EPOCHFS_TEST_TRANSPORT"].flatMap(FUSETransport.init(rawValue:))
    }

    static let parameter = "/sys/module/fuse/parameters/enable_uring"

    /// Turns the kernel's FUSE over io_uring on (root) if it is off; whether it is now on.
    public static func enableRing() -> Bool {
        if isRingEnabled { return true }
        _ = try? "Y".write(toFile: parameter, atomically: false, encoding: .utf8)
        return isRingEnabled
    }

    public static var isRingEnabled: Bool {
        (try? String(contentsOfFile: parameter, encoding: .utf8))?.hasPrefix("Y") == true
    }
}

/// A volume created with the built `epochfs` binary and mounted by a child `epochfs mount -f`
/// this test owns. It is unmounted and removed when released; `destroy()` does it at a point of
/// the test's choosing (use `defer`).
public final class MountedVolume: @unchecked Sendable {
    public let root: String
    public var backing: String { root + "/backing" }
    public var mountpoint: String { root + "/mnt" }
    public var keys: String { root + "/keys" }
    public let binary = productPath("epochfs")
    /// The daemon's stderr: beside the volume, or for one on a `SmallDisk` outside it, so that
    /// the daemon keeps no file of that disk open for writing.
    private let logPath: String
    private var process: ChildProcess?
    /// The key source the mount is given (`--key-source`), or nil for the remembered one.
    private let mountKeySource: String?

    /// Key files for epochs 1...`epochs`; the volume starts at epoch 1. It lives in its own
    /// temporary directory, or in `directory/name` (several volumes side by side), or under
    /// `disk` (a backing disk that fills up).
    /// `keys` gives the key of each epoch (1, 2, ...) instead of random ones, `clusterID`
    /// makes the volume a raft cluster member, `mountKeySource` is given to the mount.
    public init(in directory: TemporaryDirectory? = nil, name: String = "volume", on disk: (any BackingDisk)? = nil, epochs: Int = 3,
                blockSize: Int = 4096, mountOptions: [String] = [], keys givenKeys: [[UInt8]]? = nil, clusterID: String? = nil,
                mountKeySource: String? = nil) throws {
        try requireTools([("/bin/fusermount3", "fuse3")])
        guard access("/dev/fuse", R_OK | W_OK) == 0 else { throw TestFailure("/dev/fuse is missing; run mount-helpers/prepare-host.sh") }
        root = disk.map { $0.path + "/" + name } ?? directory.map { $0.path + "/" + name }
            ?? NSTemporaryDirectory() + "epochfs-mount-" + UUID().uuidString
        logPath = disk == nil ? root + "/mount.log" : NSTemporaryDirectory() + "epochfs-mount-" + UUID().uuidString + ".log"
        try FileManager.default.createDirectory(atPath: root + "/keys", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/mnt", withIntermediateDirectories: true)
        self.mountKeySource = mountKeySource
        if let givenKeys {
            for (index, key) in givenKeys.enumerated() { try Data(key).write(to: URL(fileURLWithPath: "\(keys)/\(index + 1).key")) }
        } else {
            for epoch in 1...epochs { try addKey(epoch: epoch) }
        }
        let created = try run(binary, ["init", backing, "--key-source", "file:\(keys)/%d.key", "--block-size", String(blockSize)]
            + (clusterID.map { ["--cluster-id", $0] } ?? []))
        guard created.status == 0 else { throw TestFailure("init failed: \(created.stderr)") }
        try mount(options: mountOptions)
    }

    public func addKey(epoch: Int) throws {
        let key = (0..<32).map { _ in UInt8.random(in: 0...255) }
        try Data(key).write(to: URL(fileURLWithPath: "\(keys)/\(epoch).key"))
    }

    deinit { destroy() }

    public func path(_ relative: String) -> String { mountpoint + "/" + relative }

    /// `epochfs ARGUMENTS...`, bounded in time.
    public func epochfs(_ arguments: String...) throws -> CommandResult {
        try runBounded([binary] + arguments, seconds: 120)
    }

    /// Mounts with `options`; `launcher` (a program and its arguments that execs the rest, as
    /// prlimit does) runs the daemon.
    public func mount(options: [String] = [], launcher: [String] = []) throws {
        let transport = FUSETransport.requested
        let options = transport == .devFuse && !options.contains(where: { $0.hasPrefix("io_uring=") }) ? options + ["io_uring=off"] : options
        let process = try ChildProcess(launcher + [binary, "mount", backing, mountpoint, "-f"] + options.flatMap { ["-o", $0] }
                                           + (mountKeySource.map { ["--key-source", $0] } ?? []),
                                       stdoutPath: "/dev/null", stderrPath: logPath)
        self.process = process
        let deadline = Date().addingTimeInterval(15)
        while !isMounted {
            guard process.isRunning, Date() < deadline else {
                unmount()
                throw TestFailure("mount did not appear: \(mountLog)")
            }
            usleep(20_000)
        }
        if transport == .ioUring && !options.contains("io_uring=off") {
            let kind = (try status()["transport"] as? [String: Any])?["kind"] as? String
            guard kind == "io_uring" else {
                throw TestFailure("EPOCHFS_TEST_TRANSPORT=io_uring, but the mount serves \(kind ?? "?"): \(mountLog)")
            }
        }
    }

    /// The pid of the `epochfs mount -f` this fixture started.
    public var daemonPID: pid_t? { process?.pid }

    public var isMounted: Bool {
        let table = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        return table.split(separator: "\n").contains { $0.split(separator: " ").dropFirst(4).first.map(String.init) == mountpoint }
    }

    public var mountLog: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Unmounts with fusermount3 and waits for the daemon to exit (killing only our own pid
    /// if it does not); whether it exited by itself. Safe to call twice.
    @discardableResult public func unmount() -> Bool {
        if isMounted { _ = try? run("/bin/fusermount3", ["-u", "-z", mountpoint]) }
        return awaitDaemonExit()
    }

    /// Waits up to 10 s for the daemon to exit, then kills it; whether it exited by itself.
    @discardableResult public func awaitDaemonExit() -> Bool {
        guard let process else { return true }
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        let exited = !process.isRunning
        if !exited { process.kill9() }
        self.process = nil
        return exited
    }

    /// Unmounts and removes everything.
    public func destroy() {
        unmount()
        try? FileManager.default.removeItem(atPath: root)
        try? FileManager.default.removeItem(atPath: logPath)
    }

    /// Writes one command to the control file; returns the errno (0 on success).
    public func control(_ command: String) -> Int32 {
        let fd = open(path(".epochfs/control"), O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        let bytes = Array(command.utf8)
        return write(fd, bytes, bytes.count) == bytes.count ? 0 : errno
    }

    public func status() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path(".epochfs/status")))
        return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }
}
