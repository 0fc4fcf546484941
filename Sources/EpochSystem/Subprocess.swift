import EpochIO
import EpochCrypto
import Glibc

/// Runs `/bin/sh -c SCRIPT sh ARGS...` in its own process group with stdin from /dev/null,
/// stdout captured into `SecretBytes` (at most `limit` bytes) and stderr inherited. The whole
/// group is killed when `timeout` seconds pass. Key commands and the reconciler's epoch
/// command both run through it.
public enum Subprocess {
    public enum Outcome {
        case exited(status: Int32, stdout: SecretBytes)
        case timedOut
    }

    public static func runShell(_ script: String, arguments: [String], timeout: Double, limit: Int) throws -> Outcome {
        var pipeFDs: [Int32] = [-1, -1]
        guard pipe(&pipeFDs) == 0 else { throw SystemError("pipe", path: script) }
        // Neither end may leak into the child beyond the stdout dup2 below.
        pipeFDs.forEach { _ = fcntl($0, F_SETFD, FD_CLOEXEC) }
        defer { close(pipeFDs[0]) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // FUSE worker threads block every signal; the key command must not inherit that.
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK))
        posix_spawnattr_setpgroup(&attributes, 0)

        let argv = (["/bin/sh", "-c", script, "sh"] + arguments).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, "/bin/sh", &actions, &attributes, argv + [nil], environ)
        close(pipeFDs[1])
        guard spawned == 0 else { throw SystemError("posix_spawn", path: "/bin/sh", errno: spawned) }

        let deadline = monotonicSeconds() + timeout
        var filled = 0
        var timedOut = false
        let captured = try SecretBytes(count: limit + 1) { buffer in
            while filled < buffer.count {
                let remaining = deadline - monotonicSeconds()
                if remaining <= 0 { timedOut = true; break }
                var poller = pollfd(fd: pipeFDs[0], events: Int16(POLLIN), revents: 0)
                let ready = poll(&poller, 1, Int32(min(remaining, 1) * 1000) + 1)
                if ready < 0 && errno != EINTR { throw SystemError("poll", path: script) }
                if ready <= 0 { continue }
                let n = retryingEINTR { read(pipeFDs[0], buffer.baseAddress! + filled, buffer.count - filled) }
                if n < 0 { throw SystemError("read", path: script) }
                if n == 0 { break }
                filled += n
            }
        }
        if timedOut || filled > limit { kill(-pid, SIGKILL) }
        var status: Int32 = 0
        retryingEINTR { waitpid(pid, &status, 0) }
        if timedOut { return .timedOut }
        guard filled <= limit else { throw SystemError("read", path: script, errno: EFBIG) }
        let exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        let stdout = captured.withUnsafeBytes { SecretBytes(copying: UnsafeRawBufferPointer(rebasing: $0[..<filled])) }
        return .exited(status: exitStatus, stdout: stdout)
    }

    public static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}
