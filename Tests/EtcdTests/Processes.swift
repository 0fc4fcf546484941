import Foundation
import Glibc
import Support
import Synchronization
import Testing

/// A fresh directory under /tmp, removed with its files when the value goes away.
final class TemporaryDirectory: Sendable {
    let path: String

    init() {
        var template = Array("/tmp/epochfs-etcd-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// `path/name`, with `name`'s parent directories created.
    func file(_ name: String) -> String {
        let full = path + "/" + name
        try? FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent,
                                                 withIntermediateDirectories: true)
        return full
    }
}

/// A child process started with posix_spawn, stdout and stderr going to files. Signals go only
/// to its own pid, and never after it has been reaped (the pid could be reused by then).
final class ChildProcess: @unchecked Sendable {
    let pid: pid_t
    let arguments: [String]
    let stdoutPath: String
    let stderrPath: String
    private let lock = NSLock()
    private var status: Int32?

    init(_ arguments: [String], stdoutPath: String, stderrPath: String) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let result = posix_spawn(&child, arguments[0], &actions, nil, argv, environ)
        guard result == 0 else { throw TestFailure("cannot start \(arguments[0]): \(String(cString: strerror(result)))") }
        pid = child
        self.arguments = arguments
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath
    }

    /// The exit status (128 + signal when killed), or nil if still running after `seconds`.
    func wait(seconds: Double) -> Int32? {
        let deadline = monotonicSeconds() + seconds
        while true {
            if let status = reap() { return status }
            if monotonicSeconds() > deadline { return nil }
            usleep(20_000)
        }
    }

    var isRunning: Bool { reap() == nil }

    /// SIGTERM, then SIGKILL after `grace` seconds. Only this pid.
    @discardableResult
    func stop(grace: Double = 10) -> Int32 {
        if let status = reap() { return status }
        kill(pid, SIGTERM)
        if let status = wait(seconds: grace) { return status }
        return kill9()
    }

    /// SIGKILL and reap.
    @discardableResult
    func kill9() -> Int32 {
        if let status = reap() { return status }
        kill(pid, SIGKILL)
        return wait(seconds: 30) ?? -1
    }

    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    private func reap() -> Int32? {
        lock.withLock {
            if let status { return status }
            var raw: Int32 = 0
            guard waitpid(pid, &raw, WNOHANG) == pid else { return nil }
            status = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
            return status
        }
    }
}

struct BoundedResult {
    let status: Int32
    let stdout: String
    let stderr: String
}

/// Runs a command to completion, killing it after `seconds` (the result then says so).
func runBounded(_ arguments: [String], seconds: Double = 60, in directory: TemporaryDirectory) throws -> BoundedResult {
    let name = "run-\(UInt64.random(in: 0...UInt64.max))"
    let child = try ChildProcess(arguments, stdoutPath: directory.file(name + ".out"), stderrPath: directory.file(name + ".err"))
    guard let status = child.wait(seconds: seconds) else {
        child.kill9()
        throw TestFailure("\(arguments.joined(separator: " ")) did not finish within \(seconds) s")
    }
    return BoundedResult(status: status, stdout: child.stdout, stderr: child.stderr)
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// Polls `condition` every 50 ms until it holds or `seconds` pass.
func waitUntil(seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = monotonicSeconds() + seconds
    while monotonicSeconds() < deadline {
        if try condition() { return true }
        usleep(50_000)
    }
    return try condition()
}

/// A loopback port the kernel reports free right now, never one handed out before in this run.
func freeLoopbackPort() -> UInt16 {
    while true {
        let port = kernelChosenPort()
        if handedOutPorts.withLock({ $0.insert(port).inserted }) { return port }
    }
}

private let handedOutPorts = Mutex<Set<UInt16>>([])

private func kernelChosenPort() -> UInt16 {
    let socketDescriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    precondition(socketDescriptor >= 0)
    defer { close(socketDescriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            precondition(bind(socketDescriptor, pointer, length) == 0)
            precondition(getsockname(socketDescriptor, pointer, &length) == 0)
        }
    }
    return UInt16(bigEndian: address.sin_port)
}

/// Tools the tests need fail the test with a message, never skip it: CI must not pass by
/// running nothing. `mount-helpers/prepare-host.sh` installs them.
func requireTools(_ tools: [(path: String, package: String)]) throws {
    let missing = tools.filter { access($0.path, X_OK) != 0 }
    guard missing.isEmpty else {
        throw TestFailure("missing \(missing.map { "\($0.path) (Debian package \($0.package))" }.joined(separator: ", ")); "
            + "run mount-helpers/prepare-host.sh")
    }
}

/// The epochfs binary built beside the tests.
let epochfsPath = productPath("epochfs")
