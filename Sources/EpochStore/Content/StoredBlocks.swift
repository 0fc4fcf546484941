import EpochFormat

/// One stored block of a regular file, as a volume scan sees it.
public struct StoredBlock: Sendable {
    public let index: Int
    /// The epoch its envelope names; nil for a hole (all zeros) or a block too damaged to name one.
    public let keyID: Epoch?
    /// Plaintext bytes it holds.
    public let length: Int
    /// Why it does not open; nil when it does.
    public let error: EnvelopeError?
}

/// What a reseal of a file's blocks (`FileContent.resealOlderBlocks`) did.
public struct ResealCount: Sendable, Equatable {
    /// Resealed under the active epoch.
    public var resealed = 0
    /// At the active epoch already, or holes.
    public var current = 0
    /// Did not open: left as they were.
    public var unreadable = 0
    /// The blocks as left, by the epoch they name (holes name none).
    public var keyIDs: [Epoch: Int] = [:]

    public init() {}

    public static func += (total: inout ResealCount, more: ResealCount) {
        total.resealed += more.resealed
        total.current += more.current
        total.unreadable += more.unreadable
        total.keyIDs.merge(more.keyIDs, uniquingKeysWith: +)
    }
}
