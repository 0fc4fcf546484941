import Foundation
import Glibc

/// A built executable of this package, next to the test bundle in the build folder.
public func productPath(_ name: String) -> String {
    let testBinary = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
    return testBinary.deletingLastPathComponent().appendingPathComponent(name).path
}

public struct CommandResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

/// A child process started with posix_spawn and reaped with waitpid. (Foundation's Process
/// can miss the exit of a child whose own child daemonizes, as `epochfs mount` does.)
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    private var exitStatus: Int32?

    /// Starts `executable`; stdin from `stdinFD`, output to the given descriptors (the
    /// caller keeps and closes its own copies).
    public init(_ executable: String, _ arguments: [String], currentDirectory: String? = nil,
                stdinFD: Int32, stdoutFD: Int32, stderrFD: Int32) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinFD, 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutFD, 1)
        posix_spawn_file_actions_adddup2(&actions, stderrFD, 2)
        // Run through env so a working directory can be set without chdir in this process.
        let argv = ((currentDirectory.map { ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", $0] } ?? []) + [executable] + arguments)
            .map { strdup($0) }
        defer { argv.forEach { free($0) } }
        // The spawning thread may block signals (test runner threads do); the child must not
        // inherit that, or SIGTERM would never reach it.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        var pid: pid_t = 0
        let result = posix_spawn(&pid, argv[0]!, &actions, &attributes, argv + [nil], environ)
        guard result == 0 else { throw FixtureError("cannot start \(executable): errno \(result)") }
        self.pid = pid
    }

    public var isRunning: Bool {
        guard exitStatus == nil else { return false }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { exitStatus = Self.decode(status) }
        return exitStatus == nil
    }

    @discardableResult
    public func wait() -> Int32 {
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        exitStatus = Self.decode(status)
        return exitStatus!
    }

    private static func decode(_ status: Int32) -> Int32 {
        (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}

/// Runs a program to completion with optional stdin, capturing both outputs (through files,
/// so a daemon that keeps a descriptor cannot hold the caller up).
@discardableResult
public func run(_ executable: String, _ arguments: [String], stdin: String? = nil,
                currentDirectory: String? = nil) throws -> CommandResult {
    let scratch = NSTemporaryDirectory() + "epochfs-run-" + UUID().uuidString
    defer { ["in", "out", "err"].forEach { unlink(scratch + "." + $0) } }
    try Data((stdin ?? "").utf8).write(to: URL(fileURLWithPath: scratch + ".in"))
    let input = open(scratch + ".in", O_RDONLY), output = open(scratch + ".out", O_WRONLY | O_CREAT, 0o600),
        errors = open(scratch + ".err", O_WRONLY | O_CREAT, 0o600)
    defer { [input, output, errors].forEach { close($0) } }
    let child = try ChildProcess(executable, arguments, currentDirectory: currentDirectory,
                                 stdinFD: input, stdoutFD: output, stderrFD: errors)
    let status = child.wait()
    return CommandResult(status: status,
                         stdout: (try? String(contentsOfFile: scratch + ".out", encoding: .utf8)) ?? "",
                         stderr: (try? String(contentsOfFile: scratch + ".err", encoding: .utf8)) ?? "")
}
