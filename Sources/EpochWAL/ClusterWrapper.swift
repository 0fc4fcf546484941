import EpochCrypto
import EpochFormat

extension RaftPayloadWrapper {
    /// The wrapper of a raft leader whose cluster's members each run on their own volume: it
    /// wraps under the highest epoch that every member holds, the lowest of `memberEpochs`
    /// (each member's lowest active epoch; `epochfs reconcile status` reports it as the cluster
    /// epoch), never under one a member lacks, so that every follower opens what it wraps
    /// while the members are rekeyed one after another. `keyring` is the leader's; it holds
    /// that epoch (its own active one is among `memberEpochs`) unless it retired it, which
    /// throws `EnvelopeError.retiredKey`.
    public init(keyring: Keyring, memberEpochs: [Epoch], layout: PayloadLayout = .proposal) throws {
        guard let clusterEpoch = memberEpochs.min() else { throw ClusterWrapperError.noMembers }
        guard clusterEpoch <= keyring.activeEpoch else {
            throw ClusterWrapperError.leaderBehind(leader: keyring.activeEpoch, cluster: clusterEpoch)
        }
        guard let raftDEK = try keyring.keys(for: clusterEpoch).raftDEK else { throw EnvelopeError.retiredKey(clusterEpoch) }
        try self.init(keyID: clusterEpoch, raftDEK: try AESGCMKey(raftDEK), layout: layout)
    }
}

public enum ClusterWrapperError: Error, Equatable, CustomStringConvertible {
    case noMembers
    case leaderBehind(leader: Epoch, cluster: Epoch)

    public var description: String {
        switch self {
        case .noMembers: "no member epochs: the cluster epoch is unknown"
        case let .leaderBehind(leader, cluster): "the leader is at epoch \(leader), below the cluster epoch \(cluster)"
        }
    }
}
