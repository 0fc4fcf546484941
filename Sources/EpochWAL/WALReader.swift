import EpochIO
import EpochFormat

/// An entry as the reader delivers it. `data` and `storedData` borrow the reader's buffers
/// and are valid only during the callback; `copied()` keeps an entry.
public struct WALEntry {
    public let type: RaftEntryType
    public let term: UInt64
    public let index: UInt64
    /// What the application wrote before wrapping: `storedData` when the entry passed the
    /// gate untouched, else the opened payload (behind the clear 9-byte header in the
    /// `proposal` layout).
    public let data: UnsafeRawBufferPointer
    /// `Entry.Data` as stored in the WAL.
    public let storedData: UnsafeRawBufferPointer
    /// The key id of the raft envelope that was opened; nil when the entry passed through.
    public let envelopeKeyID: Epoch?
    /// The request id of an opened `proposal`-layout entry.
    public let proposalRequestID: UInt64?
    /// The frame of the entry's record.
    public let location: WALLocation

    /// The entry with its (opened) data copied out.
    public func copied() -> RaftEntry { RaftEntry(type: type, term: term, index: index, data: Array(data)) }
}

/// What the reader reports, in log order.
///
/// Replay semantics: entries are delivered as they are read, so memory stays bounded. When
/// an entry's index was already delivered, a raft leader change overwrote the log there, and
/// etcd's replay drops that entry and every later one. The reader reports this first as
/// `.truncated(from: index)` (forget every delivered entry with an index >= index), then the
/// new `.entry`. A consumer that rebuilds the log the way etcd's `ReadAll` does (raft's
/// MemoryStorage, a state machine applying only up to `HardState.commit`, a dump) truncates
/// and appends; no entry at or below a commit index is ever truncated in a valid log.
public enum WALEvent {
    /// The metadata record, once: etcd repeats it in every segment and the reader checks
    /// the copies are identical.
    case metadata([UInt8])
    case entry(WALEntry)
    case truncated(from: UInt64)
    case hardState(HardState)
    case snapshot(WALSnapshot)
}

/// What a full read found.
public struct WALSummary: Sendable {
    public internal(set) var segments: [WALSegmentName] = []
    /// Frame bytes read, up to the end of the log.
    public internal(set) var bytes: Int64 = 0
    public internal(set) var records = 0
    /// Entry records read, replaced ones included.
    public internal(set) var entryRecords = 0
    /// Delivered entries later dropped by `.truncated` events.
    public internal(set) var replacedEntries = 0
    /// Entries whose raft envelope was opened.
    public internal(set) var unwrappedEntries = 0
    /// Index range of the log after replay; nil when it holds no entry.
    public internal(set) var firstIndex: UInt64?
    public internal(set) var lastIndex: UInt64?
    public internal(set) var hardState: HardState?
    public internal(set) var lastSnapshot: WALSnapshot?
    /// The running CRC-32C at the end of the log (CRC-32C of every record's data).
    public internal(set) var crc: UInt32 = 0
    public internal(set) var end = WALEnd.clean(WALLocation(segment: "", offset: 0))

    /// Entries in the replayed log.
    public var entries: UInt64 {
        guard let firstIndex, let lastIndex else { return 0 }
        return lastIndex - firstIndex + 1
    }
}

/// Streams a directory of etcd WAL segments (docs/FORMAT.md §9.1, §11): frames, records, the CRC-32C
/// chain checked record by record and at every segment's crc record, torn tails in the last
/// segment, replay semantics (see `WALEvent`) and the cutover gate. Every segment is read
/// from its start in bounded chunks; peak memory is one chunk plus the largest record, and
/// does not depend on the size of the log.
///
/// The whole directory is read, starting at its first segment (etcd's `selectWALFiles` for a
/// snapshot at index 0); a directory whose older segments were purged starts at the first
/// one left, seeding the CRC chain from its crc record as etcd does. The first entry read
/// sets the base index; after it, indices must not skip ahead.
///
/// Where etcd is lax the reader fails closed: a length word must be one etcd's encoder
/// writes, every segment must start with a crc record, entry index 0 and index gaps are
/// errors, and a short frame is a torn tail only in the last segment (elsewhere corruption).
public struct WALReader {
    public static let defaultChunkSize = 1 << 20

    public let directory: String
    public let gate: CutoverGate
    public let chunkSize: Int
    private let io: any BackingIO

    public init(directory: String, gate: CutoverGate = CutoverGate(), chunkSize: Int = defaultChunkSize,
                io: any BackingIO = SystemIO()) {
        precondition(chunkSize >= 4096, "chunks smaller than a page only cost system calls")
        self.directory = directory
        self.gate = gate
        self.chunkSize = chunkSize
        self.io = io
    }

    /// Reads the log, calling `handle` for every event in order. Throws `WALError` on
    /// corruption or on an entry above the cutover that does not open (nothing after it is
    /// delivered), and rethrows whatever `handle` throws. A torn tail is not an error: it
    /// ends the log and shows in `WALSummary.end`.
    public func read(_ handle: (WALEvent) throws -> Void) throws -> WALSummary {
        let names = try WALSegmentName.list(directory: directory, io: io)
        return try withoutActuallyEscaping(handle) { handle in
            var replay = Replay(gate: gate, handle: handle)
            replay.summary.segments = names
            for (position, name) in names.enumerated() {
                let segment = try SegmentFile(directory: directory, name: name.fileName, chunkSize: chunkSize, io: io)
                replay.summary.end = try replay.read(segment, isLast: position == names.count - 1)
            }
            replay.summary.crc = replay.crc.value
            return replay.summary
        }
    }

    /// Reads the whole log, opening every entry above the cutover, and delivers nothing.
    public func verify() throws -> WALSummary {
        try read { _ in }
    }
}

/// The state of one read: CRC chain, metadata, replay position, summary.
private struct Replay {
    let gate: CutoverGate
    let handle: (WALEvent) throws -> Void
    var summary = WALSummary()
    var crc = CRC32C()
    var metadata: [UInt8]?
    /// The index of the last entry delivered.
    var lastIndex: UInt64?

    init(gate: CutoverGate, handle: @escaping (WALEvent) throws -> Void) {
        self.gate = gate
        self.handle = handle
    }

    /// Reads one segment; returns where it ended.
    mutating func read(_ segment: SegmentFile, isLast: Bool) throws -> WALEnd {
        var offset: Int64 = 0
        while true {
            let location = WALLocation(segment: segment.name, offset: offset)
            let remaining = segment.size - offset
            if remaining == 0 { return .clean(location) }
            guard let wordBytes = try segment.bytes(at: offset, count: Frame.wordSize) else {
                return try tornOrCorrupt(isLast, location, .shortLengthWord(available: remaining),
                                         .truncatedLengthWord(available: remaining))
            }
            let word = UInt64(littleEndian: wordBytes.loadUnaligned(as: UInt64.self))
            if word == 0 { return .clean(location) } // preallocated space
            guard let (length, padding) = Frame.decode(word) else {
                throw corrupt(.badLengthWord(word), location)
            }
            let frameBody = length + padding
            let available = remaining - Int64(Frame.wordSize)
            guard frameBody <= available,
                  let body = try segment.bytes(at: offset + Int64(Frame.wordSize), count: Int(frameBody))
            else {
                return try tornOrCorrupt(isLast, location, .shortRecord(needed: frameBody, available: available),
                                         .truncatedRecord(needed: frameBody, available: available))
            }
            let recordBytes = UnsafeRawBufferPointer(rebasing: body[0..<Int(length)])
            let record: DecodedRecord
            do {
                record = try DecodedRecord(recordBytes)
            } catch {
                if isLast, Self.hasZeroSector(body, fileOffset: offset + Int64(Frame.wordSize)) {
                    return .torn(location, .zeroSector)
                }
                throw corrupt(.malformedRecord(error.description), location)
            }
            if record.type != WALRecordType.crc.rawValue {
                crc.update(record.data)
                guard crc.value == record.crc else {
                    if isLast, Self.hasZeroSector(body, fileOffset: offset + Int64(Frame.wordSize)) {
                        return .torn(location, .zeroSector)
                    }
                    throw corrupt(.recordCRCMismatch(stored: record.crc, computed: crc.value), location)
                }
            }
            if offset == 0, record.type != WALRecordType.crc.rawValue {
                throw corrupt(.missingCRCRecord(recordType: record.type), location)
            }
            try apply(record, location)
            offset += Int64(Frame.wordSize) + frameBody
            summary.bytes += Int64(Frame.wordSize) + frameBody
            summary.records += 1
        }
    }

    private mutating func apply(_ record: DecodedRecord, _ location: WALLocation) throws {
        switch WALRecordType(rawValue: record.type) {
        case .crc:
            // etcd skips the check while the chain is still 0: a reader starting at a later
            // segment takes its seed from that segment's crc record.
            if crc.value != 0, crc.value != record.crc {
                throw corrupt(.chainCRCMismatch(stored: record.crc, running: crc.value), location)
            }
            crc = CRC32C(seed: record.crc)
        case .metadata:
            if let metadata {
                guard metadata.elementsEqual(record.data) else { throw corrupt(.conflictingMetadata, location) }
            } else {
                let copy = Array(record.data)
                metadata = copy
                try handle(.metadata(copy))
            }
        case .entry:
            let entry: DecodedEntry
            do { entry = try DecodedEntry(record.data) } catch {
                throw corrupt(.malformedPayload(.entry, error.description), location)
            }
            try deliver(entry, location)
        case .state:
            let state: HardState
            do { state = try HardState(decoding: record.data) } catch {
                throw corrupt(.malformedPayload(.state, error.description), location)
            }
            summary.hardState = state
            try handle(.hardState(state))
        case .snapshot:
            let snapshot: WALSnapshot
            do { snapshot = try WALSnapshot(decoding: record.data) } catch {
                throw corrupt(.malformedPayload(.snapshot, error.description), location)
            }
            summary.lastSnapshot = snapshot
            try handle(.snapshot(snapshot))
        case nil:
            throw corrupt(.unexpectedRecordType(record.type), location)
        }
    }

    /// Index checks, the gate, then the replay rule; nothing is delivered for an entry that
    /// fails any of them.
    private mutating func deliver(_ entry: DecodedEntry, _ location: WALLocation) throws {
        summary.entryRecords += 1
        guard entry.index != 0 else { throw corrupt(.entryIndexZero, location) }
        if let lastIndex, entry.index > lastIndex + 1 {
            throw corrupt(.indexGap(expected: lastIndex + 1, found: entry.index), location)
        }
        let admitted: CutoverGate.Admitted
        do {
            admitted = try gate.admit(index: entry.index, type: entry.type, data: entry.data)
        } catch {
            throw WALError.unwrapFailed(index: entry.index, lastDelivered: lastIndex, at: location, reason: error)
        }
        if let lastIndex, entry.index <= lastIndex {
            summary.replacedEntries += Int(lastIndex - entry.index + 1)
            try handle(.truncated(from: entry.index))
        }
        if admitted.envelopeKeyID != nil { summary.unwrappedEntries += 1 }
        try handle(.entry(WALEntry(type: entry.type, term: entry.term, index: entry.index, data: admitted.data,
                                   storedData: entry.data, envelopeKeyID: admitted.envelopeKeyID,
                                   proposalRequestID: admitted.proposalRequestID, location: location)))
        lastIndex = entry.index
        summary.lastIndex = entry.index
        if summary.firstIndex.map({ entry.index < $0 }) ?? true { summary.firstIndex = entry.index }
    }

    private func corrupt(_ corruption: WALCorruption, _ location: WALLocation) -> WALError {
        .corrupt(corruption, at: location, lastIndex: lastIndex)
    }

    private func tornOrCorrupt(_ isLast: Bool, _ location: WALLocation, _ torn: TornTail,
                               _ corruption: WALCorruption) throws -> WALEnd {
        guard isLast else { throw corrupt(corruption, location) }
        return .torn(location, torn)
    }

    /// etcd's `isTornEntry`: split the frame body (record and padding) at absolute 512-byte
    /// file offsets; a torn write left at least one of those pieces all zeros.
    static func hasZeroSector(_ body: UnsafeRawBufferPointer, fileOffset: Int64) -> Bool {
        let sector: Int64 = 512
        var position = 0
        var absolute = fileOffset
        while position < body.count {
            let pieceLength = min(Int(sector - absolute % sector), body.count - position)
            if body[position..<position + pieceLength].allSatisfy({ $0 == 0 }) { return true }
            position += pieceLength
            absolute += Int64(pieceLength)
        }
        return false
    }
}
