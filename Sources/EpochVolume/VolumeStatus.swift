/// What `info --json` and the mount's `.epochfs/status` report, in one JSON shape.
public struct VolumeStatus: Encodable, Sendable {
    public struct EpochState: Encodable, Sendable {
        public let epoch: UInt32
        public let state: String
    }

    public struct Counters: Encodable, Sendable {
        public let blocksRead: UInt64
        public let blocksWritten: UInt64
        public let authenticationFailures: UInt64

        enum CodingKeys: String, CodingKey {
            case blocksRead = "blocks_read", blocksWritten = "blocks_written", authenticationFailures = "authentication_failures"
        }
    }

    public let volumeID: String
    public let epoch: UInt32
    public let sequence: UInt64
    public let headerSlot: String
    public let blockSize: UInt32
    /// 2^64−1 when inert.
    public let raftCutover: UInt64
    public let keySource: String
    public let keyDerivation: String
    public let keyring: [EpochState]
    /// Mount only: counters since mount and the last control error (nil when none).
    public let counters: Counters?
    public let lastError: String?
    public let isMounted: Bool

    public init(_ header: VolumeHeader, counters: VolumeCounters? = nil, lastError: String? = nil) {
        volumeID = header.volumeID.description
        epoch = header.epoch
        sequence = header.sequence
        headerSlot = header.slotIndex == 0 ? "A" : "B"
        blockSize = header.slot.blockSize
        raftCutover = header.slot.raftCutover
        keySource = header.slot.keySource
        keyDerivation = header.slot.keyDerivation == .direct ? "direct" : "scrypt"
        keyring = header.keyring.epochs.map { EpochState(epoch: $0.epoch, state: $0.state.description) }
        self.counters = counters.map {
            Counters(blocksRead: $0.blocksRead.load(ordering: .relaxed), blocksWritten: $0.blocksWritten.load(ordering: .relaxed),
                     authenticationFailures: $0.authenticationFailures.load(ordering: .relaxed))
        }
        self.lastError = lastError
        isMounted = counters != nil
    }

    enum CodingKeys: String, CodingKey {
        case volumeID = "volume_id", epoch, sequence, headerSlot = "header_slot", blockSize = "block_size"
        case raftCutover = "raft_cutover", keySource = "key_source", keyDerivation = "key_derivation", keyring
        case counters, lastError = "last_error", reencryption
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(volumeID, forKey: .volumeID)
        try container.encode(epoch, forKey: .epoch)
        try container.encode(sequence, forKey: .sequence)
        try container.encode(headerSlot, forKey: .headerSlot)
        try container.encode(blockSize, forKey: .blockSize)
        try container.encode(raftCutover, forKey: .raftCutover)
        try container.encode(keySource, forKey: .keySource)
        try container.encode(keyDerivation, forKey: .keyDerivation)
        try container.encode(keyring, forKey: .keyring)
        guard isMounted else { return }
        try container.encode(counters, forKey: .counters)
        try container.encode(lastError, forKey: .lastError)
        // Re-encryption does not exist yet; the key is there so scripts can rely on it.
        try container.encode(["running": false], forKey: .reencryption)
    }
}
