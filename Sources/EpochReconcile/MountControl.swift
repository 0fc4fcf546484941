import EpochIO
import EpochSystem
import EpochVolume
import Foundation

/// The client side of a mount's `.epochfs/control`, `status` and `metrics` files, which the CLI
/// and the reconciler share.
public enum MountControl {
    /// `MOUNTPOINT/.epochfs/status`, the JSON as the mount reports it.
    public static func statusJSON(mountpoint: String) throws -> Data {
        try read("status", mountpoint: mountpoint)
    }

    /// `MOUNTPOINT/.epochfs/metrics`, the Prometheus text format as the mount reports it.
    public static func metricsText(mountpoint: String) throws -> Data {
        try read("metrics", mountpoint: mountpoint)
    }

    private static func read(_ name: String, mountpoint: String) throws -> Data {
        let path = mountpoint + "/.epochfs/" + name
        guard let data = FileManager.default.contents(atPath: path) else {
            throw NotAMount(path: path, mountpoint: mountpoint)
        }
        return data
    }

    /// A mount's status: what every command that asks a mount reads.
    public static func status(mountpoint: String) throws -> VolumeStatus {
        try JSONDecoder().decode(VolumeStatus.self, from: try statusJSON(mountpoint: mountpoint))
    }

    /// Sends one command to a mount's control file; its errno is the answer.
    public static func send(_ command: ControlCommand, mountpoint: String) throws {
        let path = mountpoint + "/.epochfs/control"
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", path: path) }
        defer { close(fd) }
        let bytes = Array(command.description.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else {
            let failure = SystemError(command.description, path: path)
            throw ControlCommandFailed(failure: failure, detail: try? status(mountpoint: mountpoint).lastError)
        }
    }

    /// Where the volume in `backing` is mounted now (the mount in view), or nil. epochfs mounts
    /// name their backing directory, resolved, as their source in /proc/self/mountinfo.
    public static func mountPoint(ofBacking backing: String) throws -> String? {
        let source = "epochfs:" + (try absolutePath(backing))
        return try MountTable.read().last(where: { $0.source == source })?.mountPoint
    }

    public static func absolutePath(_ path: String) throws -> String {
        guard let resolved = realpath(path, nil) else { throw SystemError("resolve", path: path) }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// A control command the mount refused: the errno and, from status, why.
public struct ControlCommandFailed: Error, CustomStringConvertible {
    public let failure: SystemError
    public let detail: String?

    public var description: String { detail.map { "\(failure) (\($0))" } ?? failure.description }
}

public struct NotAMount: Error, CustomStringConvertible {
    public let path: String
    public let mountpoint: String
    public var description: String { "\(path): not readable; is \(mountpoint) an epochfs mount?" }
}
