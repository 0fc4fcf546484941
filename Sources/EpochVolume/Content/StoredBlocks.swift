import EpochFormat

/// One stored block of a regular file, as a volume scan sees it.
public struct StoredBlock: Sendable {
    public let index: Int
    /// The epoch its envelope names; nil for a hole (all zeros) or a block too damaged to name one.
    public let keyID: UInt32?
    /// Plaintext bytes it holds.
    public let length: Int
    /// Why it does not open; nil when it does.
    public let error: EnvelopeError?
}
