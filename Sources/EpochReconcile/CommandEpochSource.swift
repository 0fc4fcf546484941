import EpochFormat
import EpochSystem
import EpochVolume

/// `command:CMD`: the epoch is what CMD prints (through /bin/sh, within 30 s, exit 0). It is
/// run at every pass and every `poll` seconds; a changed answer starts a pass.
public struct CommandEpochSource: EpochSource {
    public static let timeout = 30.0
    public let command: String
    public let poll: Double

    public var spec: String { "command:\(command)" }

    public func read() async throws -> Epoch { try readNow() }

    func readNow() throws -> Epoch {
        let outcome: Subprocess.Outcome
        do {
            outcome = try Subprocess.runShell(command, arguments: [], timeout: Self.timeout, limit: 64)
        } catch {
            throw EpochSourceError.unavailable(spec: spec, reason: "\(error)")
        }
        switch outcome {
        case .timedOut:
            throw EpochSourceError.unavailable(spec: spec, reason: "no answer within \(Int(Self.timeout)) s")
        case let .exited(status, stdout):
            guard status == 0 else { throw EpochSourceError.unavailable(spec: spec, reason: "exited with status \(status)") }
            return try EpochSourceSpec.parseEpoch(stdout.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }, from: spec)
        }
    }

    public func watch(_ changed: @escaping @Sendable () -> Void) -> WatchHandle {
        let task = Task.detached { [self] in
            var last: Epoch?
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(poll))
                let now = try? readNow()
                if now != last { changed() }
                last = now
            }
        }
        return WatchHandle { task.cancel() }
    }
}
