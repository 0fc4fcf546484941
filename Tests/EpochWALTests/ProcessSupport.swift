import Glibc

/// A child process started with posix_spawn, its output going to a file. Signals go only to
/// its own pid, and never after it has been reaped (the pid could be reused by then).
final class ChildProcess {
    let pid: pid_t
    let outputPath: String
    private(set) var exitStatus: Int32?

    /// Starts `arguments[0]` (an absolute path) with the parent's environment plus `environment`.
    init(_ arguments: [String], environment: [String: String] = [:], outputPath: String) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)

        var inherited: [String] = []
        var index = 0
        while let entry = environ[index] {
            let text = String(cString: entry)
            if environment[String(text.prefix { $0 != "=" })] == nil { inherited.append(text) }
            index += 1
        }
        let environmentStrings = inherited + environment.map { "\($0.key)=\($0.value)" }
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environmentStrings.map { strdup($0) } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var child: pid_t = 0
        let result = posix_spawn(&child, arguments[0], &actions, nil, argv, envp)
        guard result == 0 else { throw SpawnError(command: arguments[0], code: result) }
        pid = child
        self.outputPath = outputPath
    }

    /// Waits up to `seconds`; nil when the process is still running then.
    func wait(seconds: Double) -> Int32? {
        if let exitStatus { return exitStatus }
        let deadline = monotonicSeconds() + seconds
        while true {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid {
                exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
                return exitStatus
            }
            if monotonicSeconds() > deadline { return nil }
            usleep(20_000)
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace` seconds. Only this pid.
    @discardableResult
    func stop(grace: Double = 10) -> Int32 {
        if let exitStatus { return exitStatus }
        kill(pid, SIGTERM)
        if let status = wait(seconds: grace) { return status }
        kill(pid, SIGKILL)
        return wait(seconds: 10) ?? -1
    }

    var output: String { String(decoding: readFile(outputPath), as: UTF8.self) }
}

struct SpawnError: Error, CustomStringConvertible {
    let command: String
    let code: Int32
    var description: String { "cannot start \(command): \(String(cString: strerror(code)))" }
}

/// Runs a command to completion within `seconds` (killed after that); returns status and output.
func run(_ arguments: [String], environment: [String: String] = [:], seconds: Double = 60,
         in directory: TemporaryDirectory) throws -> (status: Int32, output: String) {
    let outputPath = directory.file("run-\(UInt64.random(in: 0...UInt64.max)).log")
    let child = try ChildProcess(arguments, environment: environment, outputPath: outputPath)
    let status = child.wait(seconds: seconds) ?? child.stop(grace: 1)
    return (status, child.output)
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// A loopback port the kernel reports free right now.
func freeLoopbackPort() -> UInt16 {
    let socketDescriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    precondition(socketDescriptor >= 0)
    defer { close(socketDescriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            precondition(bind(socketDescriptor, pointer, length) == 0)
            precondition(getsockname(socketDescriptor, pointer, &length) == 0)
        }
    }
    return UInt16(bigEndian: address.sin_port)
}

func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 }
func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }
