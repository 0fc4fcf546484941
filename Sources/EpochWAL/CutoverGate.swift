import EpochCrypto
import EpochFormat

/// How a raft envelope sits in `Entry.Data` (docs/FORMAT.md §9.2).
public enum PayloadLayout: String, Sendable, CaseIterable {
    /// `0x01 ‖ request id (BE u64) ‖ raft envelope`: the 9-byte proposal header stays clear.
    case proposal
    /// `Entry.Data` is the raft envelope.
    case raw
}

/// The proposal envelope's clear header (docs/FORMAT.md §9.2).
public enum ProposalHeader {
    public static let version: UInt8 = 0x01
    public static let size = 9

    /// The request id of a proposal-layout entry.
    public static func requestID(of data: UnsafeRawBufferPointer) throws(PayloadLayoutError) -> UInt64 {
        guard data.count >= size else { throw .proposalTooShort(length: data.count) }
        guard data[0] == version else { throw .badProposalVersion(data[0]) }
        return (1..<size).reduce(UInt64(0)) { $0 << 8 | UInt64(data[$1]) }
    }
}

/// The cutover-gated unwrap (docs/FORMAT.md §9.3): an entry with index <= cutover
/// passes through untouched; above it, an EntryNormal entry with data carries a raft envelope
/// that must open, while empty entries (leader no-ops) and conf changes pass through. The inert
/// default cutover, u64 max, unwraps nothing. One AES key and one AAD per key id are built on
/// first use and kept, so nothing is expanded, allocated or hashed per entry of a run under one
/// key id. Not thread-safe: one gate per reader.
public final class CutoverGate {
    public let cutover: UInt64
    public let layout: PayloadLayout
    private let raftKeys: EnvelopeKeyLookup?
    private var openingKeys: [Epoch: OpeningKey] = [:]
    private var lastOpeningKey: OpeningKey?
    private let scratch = ScratchBuffer()

    /// `raftKeys` returns the raft DEK for a key id, or throws `EnvelopeError.unknownKeyID` /
    /// `.retiredKey`; its errors stop the reader as they are.
    public init(cutover: UInt64 = .max, layout: PayloadLayout = .proposal, raftKeys: EnvelopeKeyLookup? = nil) {
        self.cutover = cutover
        self.layout = layout
        self.raftKeys = raftKeys
    }

    /// An entry after the gate. `data` is what the application wrote before wrapping: the
    /// stored data when the entry passed through; when it was opened, the plaintext payload,
    /// behind the clear proposal header in the `proposal` layout. It borrows the gate's
    /// buffer or the caller's bytes and is valid until the next call.
    struct Admitted {
        var data: UnsafeRawBufferPointer
        var envelopeKeyID: Epoch?
        var proposalRequestID: UInt64?
    }

    func admit(index: UInt64, type: RaftEntryType, data: UnsafeRawBufferPointer) throws(UnwrapFailure) -> Admitted {
        guard index > cutover, !data.isEmpty, !type.isConfChange else {
            return Admitted(data: data, envelopeKeyID: nil, proposalRequestID: nil)
        }
        guard type == .normal else { throw .unsupportedEntryType(type) }
        guard let raftKeys else { throw .noRaftKeys }
        var requestID: UInt64?
        var headerSize = 0
        if layout == .proposal {
            do { requestID = try ProposalHeader.requestID(of: data) } catch { throw .layout(error) }
            headerSize = ProposalHeader.size
        }
        let envelope = UnsafeRawBufferPointer(rebasing: data[headerSize...])
        let keyID: Epoch
        do { keyID = try Envelope.keyID(of: envelope) } catch { throw .envelope(error) }
        let opening: OpeningKey
        do { opening = try openingKey(for: keyID, lookup: raftKeys) } catch let error as EnvelopeError {
            throw .envelope(error)
        } catch {
            throw .keyLookup(String(describing: error))
        }
        let output = scratch.reserve(data.count - Envelope.overhead)
        output.copyMemory(from: UnsafeRawBufferPointer(rebasing: data[0..<headerSize]))
        do {
            try opening.aad.withUnsafeBytes { aad in
                try Envelope.open(envelope, keyID: keyID, key: opening.key, aad: aad,
                                  into: UnsafeMutableRawBufferPointer(rebasing: output[headerSize...]))
            }
        } catch let error as EnvelopeError {
            throw .envelope(error)
        } catch {
            throw .crypto(String(describing: error))
        }
        return Admitted(data: UnsafeRawBufferPointer(output), envelopeKeyID: keyID, proposalRequestID: requestID)
    }

    /// The gate applied to one owned entry, for engines that apply entries they did not read
    /// through `WALReader`: the entry with its data unwrapped, or the reason it does not open.
    public func admit(_ entry: RaftEntry) throws(UnwrapFailure) -> RaftEntry {
        let data = entry.data.withUnsafeBytes { bytes in
            Result { () throws(UnwrapFailure) in Array(try admit(index: entry.index, type: entry.type, data: bytes).data) }
        }
        var admitted = entry
        admitted.data = try data.get()
        return admitted
    }

    /// The key and AAD for a key id. Envelope errors from the lookup (unknown, retired key)
    /// pass as they are; any other lookup error is not a cipher failure and is reported as a
    /// failed lookup.
    private func openingKey(for keyID: Epoch, lookup: EnvelopeKeyLookup) throws -> OpeningKey {
        if let last = lastOpeningKey, last.keyID == keyID { return last }
        let opening = try openingKeys[keyID] ?? OpeningKey(keyID: keyID, key: lookup(keyID), aad: RaftEnvelope.aad(keyID: keyID))
        openingKeys[keyID] = opening
        lastOpeningKey = opening
        return opening
    }
}

private struct OpeningKey {
    let keyID: Epoch
    let key: AESGCMKey
    let aad: [UInt8]
}

/// The proposer side: wraps each proposal's data once, with the active raft DEK and its key
/// id, into the layout the gate opens. Nonces are 12 fresh random bytes per envelope from
/// OpenSSL's CSPRNG (`Envelope.seal` with no fixed nonce). A nil wrapper is the identity;
/// see `Optional<RaftPayloadWrapper>.wrap`.
public struct RaftPayloadWrapper: Sendable {
    public let keyID: Epoch
    public let layout: PayloadLayout
    private let raftDEK: AESGCMKey

    public init(keyID: Epoch, raftDEK: AESGCMKey, layout: PayloadLayout = .proposal) throws(EnvelopeError) {
        guard keyID != 0 else { throw .reservedKeyID }
        self.keyID = keyID
        self.raftDEK = raftDEK
        self.layout = layout
    }

    /// `entryData` is what the engine would store unencrypted: in the `proposal` layout
    /// `0x01 ‖ request id ‖ payload`, whose payload is sealed and header kept; in `raw`, the
    /// whole data is sealed. The gate's output for the result equals `entryData`.
    public func wrap(_ entryData: [UInt8]) throws -> [UInt8] {
        switch layout {
        case .raw:
            return try RaftEnvelope.seal(entryData, keyID: keyID, raftDEK: raftDEK)
        case .proposal:
            _ = try entryData.withUnsafeBytes { (bytes) throws(PayloadLayoutError) in try ProposalHeader.requestID(of: bytes) }
            let payload = Array(entryData[ProposalHeader.size...])
            return Array(entryData[..<ProposalHeader.size]) + (try RaftEnvelope.seal(payload, keyID: keyID, raftDEK: raftDEK))
        }
    }
}

extension Optional where Wrapped == RaftPayloadWrapper {
    /// The wrapper's output, or `entryData` unchanged when there is no wrapper.
    public func wrap(_ entryData: [UInt8]) throws -> [UInt8] {
        guard let wrapper = self else { return entryData }
        return try wrapper.wrap(entryData)
    }
}
