import Foundation

/// What `epochfs info --json` says of a volume's header: its epoch and sequence.
public func headerState(_ backing: String) throws -> (epoch: UInt32, sequence: UInt64) {
    let result = try runBounded([productPath("epochfs"), "info", backing, "--json"], seconds: 60)
    guard result.status == 0,
          let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
          let epoch = object["epoch"] as? Int, let sequence = object["sequence"] as? Int else {
        throw TestFailure("info \(backing): \(result.output)")
    }
    return (UInt32(epoch), UInt64(sequence))
}

/// An `epochfs reconcile` daemon this test started, its log in `directory`. Stopped (SIGTERM,
/// only its own pid) when released.
public final class ReconcilerDaemon: @unchecked Sendable {
    public let process: ChildProcess

    public init(_ arguments: [String], in directory: TemporaryDirectory, name: String = "reconcile",
                environment: [String: String] = [:]) throws {
        process = try ChildProcess([productPath("epochfs"), "reconcile"] + arguments, environment: environment,
                                   stdoutPath: directory.file("\(name).out"), stderrPath: directory.file("\(name).log"))
    }

    deinit { process.stop() }

    public var log: String { process.stderr }

    /// Waits until `condition` holds, failing with the daemon's log when it does not within `seconds`.
    public func waitUntil(_ what: String, seconds: Double = 30, _ condition: () throws -> Bool) throws {
        let held = try Support.waitUntil(seconds: seconds) { try condition() }
        guard held else { throw TestFailure("\(what) not within \(seconds) s; reconciler log:\n\(log.suffix(4000))") }
    }
}
