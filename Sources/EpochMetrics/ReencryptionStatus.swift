import EpochFormat

/// Where a re-encryption of a mount is: running, or how its last walk ended.
public enum ReencryptionState: String, Codable, Sendable {
    case running, stopped, done, failed
}

/// What the mount's status file says of re-encryption (docs/MOUNTING.md, "The control file").
public struct ReencryptionStatus: Codable, Equatable, Sendable {
    public let running: Bool
    /// nil before the first `reencrypt start`.
    public let state: ReencryptionState?
    /// The pace asked for, in MB/s of blocks looked at.
    public let rate: Double?
    public let targetEpoch: Epoch?
    public let blocksDone: Int?
    public let blocksTotal: Int?
    public let megabytesPerSecond: Double?
    public let etaSeconds: Double?
    /// Items (blocks, symlink targets, xattr values) of the whole volume by the epoch they name:
    /// counted when the current or last pass began, and kept exact since (`LiveCensus`).
    public let itemsByEpoch: [String: Int]?
    /// The epochs those items name, so also while a pass runs and after it stopped.
    public let epochsReferenced: [Epoch]?
    /// Why the last walk stopped, if it failed.
    public let error: String?

    public init(running: Bool, state: ReencryptionState? = nil, rate: Double? = nil, targetEpoch: Epoch? = nil, blocksDone: Int? = nil,
                blocksTotal: Int? = nil, megabytesPerSecond: Double? = nil, etaSeconds: Double? = nil, itemsByEpoch: [String: Int]? = nil,
                epochsReferenced: [Epoch]? = nil, error: String? = nil) {
        self.running = running
        self.state = state
        self.itemsByEpoch = itemsByEpoch
        self.rate = rate
        self.targetEpoch = targetEpoch
        self.blocksDone = blocksDone
        self.blocksTotal = blocksTotal
        self.megabytesPerSecond = megabytesPerSecond
        self.etaSeconds = etaSeconds
        self.epochsReferenced = epochsReferenced
        self.error = error
    }

    enum CodingKeys: String, CodingKey {
        case running, state, itemsByEpoch = "items_by_epoch", rate = "rate_mb_s", targetEpoch = "target_epoch"
        case blocksDone = "blocks_done", blocksTotal = "blocks_total"
        case megabytesPerSecond = "mb_per_s", etaSeconds = "eta_seconds", epochsReferenced = "epochs_referenced", error
    }
}
