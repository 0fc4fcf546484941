import EpochFormat
import EpochHeader
import EpochMetrics
import EpochStore

/// What `info --json` and the mount's `.epochfs/status` report, in one JSON shape.
public struct VolumeStatus: Codable, Equatable, Sendable {
    public struct EpochState: Codable, Equatable, Sendable {
        public let epoch: Epoch
        public let state: String
    }

    public struct Counters: Codable, Equatable, Sendable {
        public let blocksRead: UInt64
        public let blocksWritten: UInt64
        public let authenticationFailures: UInt64
        /// Calls answered with a backing file system's failure, by errno name (ENOSPC, EDQUOT,
        /// EROFS, EIO).
        public let errors: [String: UInt64]

        enum CodingKeys: String, CodingKey {
            case blocksRead = "blocks_read", blocksWritten = "blocks_written", authenticationFailures = "authentication_failures"
            case errors
        }
    }

    public let volumeID: String
    /// The volume's format version (docs/FORMAT.md §3.1).
    public let formatVersion: UInt16
    public let epoch: Epoch
    public let sequence: UInt64
    public let headerSlot: String
    public let blockSize: UInt32
    /// 2^64−1 when inert.
    public let raftCutover: UInt64
    public let keySource: String
    public let keyDerivation: String
    /// The raft cluster the volume is a member of (its raft DEKs are derived), or nil.
    public let clusterID: String?
    public let keyring: [EpochState]
    /// Mount only: counters since mount and the last control error (nil when none).
    public let counters: Counters?
    public let lastError: String?
    /// Mount only: what a re-encryption started through the control file is doing.
    public let reencryption: ReencryptionStatus?
    /// Mount only: how the kernel's requests reach the daemon.
    public let transport: Transport?
    public let isMounted: Bool

    /// Whether the kernel sends the mount's requests through FUSE over io_uring rings
    /// (`io_uring`) or /dev/fuse alone (`dev_fuse`), and how many the rings have served.
    public struct Transport: Codable, Equatable, Sendable {
        public let kind: String
        public let ringRequests: UInt64

        public init(kind: String, ringRequests: UInt64) {
            self.kind = kind
            self.ringRequests = ringRequests
        }

        enum CodingKeys: String, CodingKey {
            case kind, ringRequests = "ring_requests"
        }
    }

    public init(_ header: VolumeHeader, counters: VolumeCounters? = nil, lastError: String? = nil,
                reencryption: ReencryptionStatus? = nil, transport: Transport? = nil) {
        volumeID = header.volumeID.description
        formatVersion = header.slot.formatVersion
        epoch = header.epoch
        sequence = header.sequence
        headerSlot = header.slotIndex == 0 ? "A" : "B"
        blockSize = header.slot.blockSize
        raftCutover = header.slot.raftCutover
        keySource = header.slot.keySource
        keyDerivation = header.slot.keyDerivation == .direct ? "direct" : "scrypt"
        clusterID = header.keyring.clusterID?.description
        keyring = header.keyring.epochs.map { EpochState(epoch: $0.epoch, state: $0.state.description) }
        self.counters = counters.map {
            Counters(blocksRead: $0.blocksRead.load(ordering: .relaxed), blocksWritten: $0.blocksWritten.load(ordering: .relaxed),
                     authenticationFailures: $0.authenticationFailures.load(ordering: .relaxed), errors: $0.failedCalls)
        }
        self.lastError = lastError
        // A mount always says whether re-encryption runs.
        self.reencryption = counters == nil ? nil : reencryption ?? ReencryptionStatus(running: false)
        self.transport = transport
        isMounted = counters != nil
    }

    enum CodingKeys: String, CodingKey {
        case volumeID = "volume_id", formatVersion = "format_version", epoch, sequence, headerSlot = "header_slot", blockSize = "block_size"
        case raftCutover = "raft_cutover", keySource = "key_source", keyDerivation = "key_derivation", keyring
        case clusterID = "cluster_id"
        case counters, lastError = "last_error", reencryption, transport
    }

    /// Reads what `encode(to:)` writes: a status with counters is a mount's.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        volumeID = try container.decode(String.self, forKey: .volumeID)
        formatVersion = try container.decode(UInt16.self, forKey: .formatVersion)
        epoch = try container.decode(Epoch.self, forKey: .epoch)
        sequence = try container.decode(UInt64.self, forKey: .sequence)
        headerSlot = try container.decode(String.self, forKey: .headerSlot)
        blockSize = try container.decode(UInt32.self, forKey: .blockSize)
        raftCutover = try container.decode(UInt64.self, forKey: .raftCutover)
        keySource = try container.decode(String.self, forKey: .keySource)
        keyDerivation = try container.decode(String.self, forKey: .keyDerivation)
        clusterID = try container.decodeIfPresent(String.self, forKey: .clusterID)
        keyring = try container.decode([EpochState].self, forKey: .keyring)
        counters = try container.decodeIfPresent(Counters.self, forKey: .counters)
        lastError = try container.decodeIfPresent(String.self, forKey: .lastError)
        reencryption = try container.decodeIfPresent(ReencryptionStatus.self, forKey: .reencryption)
        transport = try container.decodeIfPresent(Transport.self, forKey: .transport)
        isMounted = counters != nil
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(volumeID, forKey: .volumeID)
        try container.encode(formatVersion, forKey: .formatVersion)
        try container.encode(epoch, forKey: .epoch)
        try container.encode(sequence, forKey: .sequence)
        try container.encode(headerSlot, forKey: .headerSlot)
        try container.encode(blockSize, forKey: .blockSize)
        try container.encode(raftCutover, forKey: .raftCutover)
        try container.encode(keySource, forKey: .keySource)
        try container.encode(keyDerivation, forKey: .keyDerivation)
        // Only on a cluster member, so that every other volume's JSON stays as it was.
        try container.encodeIfPresent(clusterID, forKey: .clusterID)
        try container.encode(keyring, forKey: .keyring)
        guard isMounted else { return }
        try container.encode(counters, forKey: .counters)
        try container.encode(lastError, forKey: .lastError)
        try container.encode(reencryption, forKey: .reencryption)
        try container.encodeIfPresent(transport, forKey: .transport)
    }
}

extension LiveVolume {
    /// What the mount's status file shows: the header, the counters, the last control error, re-encryption.
    public func status(lastError: String?, reencryption: ReencryptionStatus, transport: VolumeStatus.Transport) -> VolumeStatus {
        VolumeStatus(header, counters: counters, lastError: lastError, reencryption: reencryption, transport: transport)
    }

    /// What the mount's metrics file shows, in the Prometheus text format.
    public func metricsText(reencryption: ReencryptionStatus) -> [UInt8] {
        metrics.render(counters: counters, epoch: header.epoch, reencryption: reencryption)
    }
}
