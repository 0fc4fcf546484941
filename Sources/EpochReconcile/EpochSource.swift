import EpochFormat
import Foundation

/// Where the committed epoch comes from. `read` is asked at every pass; `watch` only says
/// when to ask again, so a missed or doubled notification never changes what a pass does.
public protocol EpochSource: Sendable {
    /// The spec as given, for logs and status.
    var spec: String { get }
    /// The committed epoch now (1 or more).
    func read() async throws -> Epoch
    /// Starts calling `changed` whenever the epoch may have changed, until the handle stops.
    func watch(_ changed: @escaping @Sendable () -> Void) -> WatchHandle
}

/// Stops a source's watch.
public final class WatchHandle: Sendable {
    private let onStop: @Sendable () -> Void
    public init(onStop: @escaping @Sendable () -> Void) { self.onStop = onStop }
    public func stop() { onStop() }
}

public enum EpochSourceSpec {
    /// `file:PATH`, `command:CMD` or `etcd:ENDPOINTS/KEY`. `poll` is how often a file or a
    /// command is read again without being told (the file's safety net beside inotify).
    public static func parse(_ spec: String, poll: Double) throws -> any EpochSource {
        if let path = spec.dropPrefix("file:"), !path.isEmpty { return FileEpochSource(path: path, poll: poll) }
        if let command = spec.dropPrefix("command:"), !command.isEmpty { return CommandEpochSource(command: command, poll: poll) }
        if let rest = spec.dropPrefix("etcd:") {
            let (endpoints, key) = try EtcdEndpoints.parse(rest)
            return EtcdEpochSource(client: EtcdClient(endpoints: endpoints), key: key, spec: spec)
        }
        throw EpochSourceError.badSpec(spec)
    }

    /// The epoch a file or a command gives: decimal digits with surrounding white space.
    static func parseEpoch(_ text: String, from spec: String) throws -> Epoch {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let epoch = Epoch(parsing: trimmed), epoch != 0 else {
            throw EpochSourceError.badValue(spec: spec, value: String(trimmed.prefix(40)))
        }
        return epoch
    }
}

public enum EpochSourceError: Error, Equatable, CustomStringConvertible {
    case badSpec(String)
    case badValue(spec: String, value: String)
    case unavailable(spec: String, reason: String)

    public var description: String {
        switch self {
        case let .badSpec(spec):
            "epoch source '\(spec)': expected file:PATH, command:CMD or etcd:ENDPOINTS/KEY"
        case let .badValue(spec, value):
            "epoch source \(spec) gave '\(value)', not an epoch (a decimal number from 1 to 4294967295)"
        case let .unavailable(spec, reason):
            "epoch source \(spec): \(reason)"
        }
    }
}

extension String {
    func dropPrefix(_ prefix: String) -> String? {
        hasPrefix(prefix) ? String(dropFirst(prefix.count)) : nil
    }
}
