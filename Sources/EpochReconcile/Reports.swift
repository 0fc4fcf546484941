import EpochFormat
import Foundation

/// What one volume holds after a pass, as the reconciler logs, publishes and shows it.
public struct VolumeReport: Codable, Equatable, Sendable {
    public enum State: String, Codable, Sendable {
        /// At the target; nothing written.
        case atTarget = "at-target"
        /// Rekeyed to the target in this pass.
        case rekeyed
        /// Above the target: left alone, an error.
        case aboveTarget = "above-target"
        /// The header did not open, the key source failed, or the rekey failed; retried.
        case failed
    }

    public let name: String
    public let backing: String
    public let volumeID: String?
    /// The epoch in the header as read in this pass (after its rekey); nil when it did not open.
    public let epoch: Epoch?
    public let sequence: UInt64?
    /// Where it is mounted (rekeyed live there), or nil (rekeyed offline).
    public let mountpoint: String?
    public let state: State
    public let lastError: String?
    /// Seconds since 1970 when the pass read it.
    public let time: Double

    enum CodingKeys: String, CodingKey {
        case name, backing, volumeID = "volume_id", epoch, sequence, mountpoint, state, lastError = "last_error", time
    }
}

/// One member's (host's) volumes after its last pass: what it publishes under the cluster
/// prefix and keeps in its state file.
public struct MemberReport: Codable, Equatable, Sendable {
    public let member: String
    /// The committed epoch the pass worked towards; nil when the source failed.
    public let target: Epoch?
    /// Why the source gave no target.
    public let sourceError: String?
    public let volumes: [VolumeReport]
    public let time: Double

    enum CodingKeys: String, CodingKey {
        case member, target, sourceError = "source_error", volumes, time
    }

    /// Every volume at the target.
    public var converged: Bool { target != nil && volumes.allSatisfy { $0.state == .atTarget || $0.state == .rekeyed } }

    /// The highest epoch every volume of this member holds: the lowest active epoch (each
    /// keyring holds every epoch up to its active one that was not retired); nil when a
    /// volume's epoch is unknown.
    public var heldEpoch: Epoch? {
        let epochs = volumes.map(\.epoch)
        guard !epochs.isEmpty, !epochs.contains(nil) else { return nil }
        return epochs.compactMap { $0 }.min()
    }
}

/// Every live member's report: what `epochfs reconcile status` shows.
public struct ClusterReport: Codable, Equatable, Sendable {
    public let target: Epoch?
    public let members: [MemberReport]

    public init(target: Epoch?, members: [MemberReport]) {
        self.target = target
        self.members = members.sorted { $0.member < $1.member }
    }

    /// The highest epoch that every live member holds: what a raft leader may wrap under.
    /// nil when there is no member or one member's volumes are not all known.
    public var clusterEpoch: Epoch? {
        let held = members.map(\.heldEpoch)
        guard !held.isEmpty, !held.contains(nil) else { return nil }
        return held.compactMap { $0 }.min()
    }

    enum CodingKeys: String, CodingKey {
        case target, members, clusterEpoch = "cluster_epoch"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(target, forKey: .target)
        try container.encode(members, forKey: .members)
        try container.encode(clusterEpoch, forKey: .clusterEpoch)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(target: try container.decodeIfPresent(Epoch.self, forKey: .target),
                  members: try container.decode([MemberReport].self, forKey: .members))
    }
}

func jsonBytes(_ value: some Encodable) throws -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return Array(try encoder.encode(value))
}
