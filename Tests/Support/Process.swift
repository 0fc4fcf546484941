import Foundation
import Glibc
import Synchronization

/// A test failure with a message (a missing tool, a process that did not start or finish).
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A built executable of this package, next to the test bundle in the build folder.
public func productPath(_ name: String) -> String {
    let testBinary = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
    return testBinary.deletingLastPathComponent().appendingPathComponent(name).path
}

/// posix_spawn_file_actions_addclosefrom_np (glibc 2.34), which Swift's Glibc module leaves out.
private let addCloseFrom = unsafeBitCast(dlsym(nil, "posix_spawn_file_actions_addclosefrom_np")!,
                                         to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)

/// A child process started with posix_spawn, stdout and stderr going to files, reaped with
/// waitpid. Signals go only to its own pid, and never after it was reaped (the pid could be
/// reused by then). Foundation's Process is not used: it can miss the exit of a child whose
/// own child daemonizes, as `epochfs mount` does.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    public let arguments: [String]
    public let stdoutPath: String
    public let stderrPath: String
    private let lock = NSLock()
    private var status: Int32?

    /// Starts `arguments[0]` (an absolute path) with this process's environment plus
    /// `environment`, in `currentDirectory` if given.
    public init(_ arguments: [String], environment: [String: String] = [:], stdinPath: String = "/dev/null",
                stdoutPath: String, stderrPath: String, currentDirectory: String? = nil) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, stdinPath, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        // Nothing else of this process: a descriptor another test holds open on its mount
        // (a control file, a file it writes) would keep that mount busy for as long as the
        // child lives, and its unmount would fail.
        _ = addCloseFrom(&actions, 3)
        // The spawning thread may block signals (test runner threads do); the child must not
        // inherit that, or SIGTERM would never reach it.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))

        var inherited: [String] = []
        var index = 0
        while let entry = environ[index] {
            let text = String(cString: entry)
            if environment[String(text.prefix { $0 != "=" })] == nil { inherited.append(text) }
            index += 1
        }
        let commandLine = (currentDirectory.map { ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", $0] } ?? []) + arguments
        let argv = commandLine.map { strdup($0) } + [nil]
        let envp = (inherited + environment.map { "\($0.key)=\($0.value)" }).map { strdup($0) } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var child: pid_t = 0
        let result = posix_spawn(&child, commandLine[0], &actions, &attributes, argv, envp)
        guard result == 0 else { throw TestFailure("cannot start \(arguments[0]): \(String(cString: strerror(result)))") }
        pid = child
        self.arguments = arguments
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath
    }

    /// The exit status (128 + signal when killed), or nil if still running after `seconds`.
    public func wait(seconds: Double) -> Int32? {
        let deadline = monotonicSeconds() + seconds
        while true {
            if let status = reap() { return status }
            if monotonicSeconds() > deadline { return nil }
            usleep(10_000)
        }
    }

    public var isRunning: Bool { reap() == nil }

    /// SIGTERM, then SIGKILL after `grace` seconds. Only this pid.
    @discardableResult
    public func stop(grace: Double = 10) -> Int32 {
        if let status = reap() { return status }
        kill(pid, SIGTERM)
        if let status = wait(seconds: grace) { return status }
        return kill9()
    }

    /// SIGKILL and reap.
    @discardableResult
    public func kill9() -> Int32 {
        if let status = reap() { return status }
        kill(pid, SIGKILL)
        return wait(seconds: 30) ?? -1
    }

    public var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

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

public struct CommandResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String

    /// Both streams, for failure messages.
    public var output: String { stdout + stderr }
}

/// Runs a command to completion, killing it after `seconds` (then throwing).
@discardableResult
public func runBounded(_ arguments: [String], environment: [String: String] = [:], stdin: String? = nil,
                       currentDirectory: String? = nil, seconds: Double = 300) throws -> CommandResult {
    let scratch = TemporaryDirectory()
    let stdinPath = scratch.file("stdin")
    try Data((stdin ?? "").utf8).write(to: URL(fileURLWithPath: stdinPath))
    let child = try ChildProcess(arguments, environment: environment, stdinPath: stdinPath, stdoutPath: scratch.file("stdout"),
                                 stderrPath: scratch.file("stderr"), currentDirectory: currentDirectory)
    guard let status = child.wait(seconds: seconds) else {
        child.kill9()
        throw TestFailure("\(arguments.joined(separator: " ")) did not finish within \(seconds) s")
    }
    return CommandResult(status: status, stdout: child.stdout, stderr: child.stderr)
}

/// `runBounded` with the executable apart from its arguments.
@discardableResult
public func run(_ executable: String, _ arguments: [String], stdin: String? = nil,
                currentDirectory: String? = nil) throws -> CommandResult {
    try runBounded([executable] + arguments, stdin: stdin, currentDirectory: currentDirectory)
}

public func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// Polls `condition` every 50 ms until it holds or `seconds` pass.
public func waitUntil(seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = monotonicSeconds() + seconds
    while monotonicSeconds() < deadline {
        if try condition() { return true }
        usleep(50_000)
    }
    return try condition()
}

/// A loopback port the kernel reports free right now, never one handed out before in this run.
public func freeLoopbackPort() -> UInt16 {
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
public func requireTools(_ tools: [(path: String, package: String)]) throws {
    let missing = tools.filter { access($0.path, X_OK) != 0 }
    guard missing.isEmpty else {
        throw TestFailure("missing \(missing.map { "\($0.path) (Debian package \($0.package))" }.joined(separator: ", ")); "
            + "run mount-helpers/prepare-host.sh")
    }
}
