/// `walpb.Record.type` values (etcd `wal/wal.go`).
public enum WALRecordType: Int64, Sendable, CustomStringConvertible {
    case metadata = 1
    case entry = 2
    case state = 3
    case crc = 4
    case snapshot = 5

    public var description: String {
        switch self {
        case .metadata: "metadata"
        case .entry: "entry"
        case .state: "state"
        case .crc: "crc"
        case .snapshot: "snapshot"
        }
    }
}

/// `raftpb.EntryType`. Kept open (a raw value) because the decoder must be able to name a
/// value it does not know in an error.
public struct RaftEntryType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let normal = RaftEntryType(rawValue: 0)
    public static let confChange = RaftEntryType(rawValue: 1)
    public static let confChangeV2 = RaftEntryType(rawValue: 2)

    public var isConfChange: Bool { self == .confChange || self == .confChangeV2 }

    public var description: String {
        switch self {
        case .normal: "EntryNormal"
        case .confChange: "EntryConfChange"
        case .confChangeV2: "EntryConfChangeV2"
        default: "EntryType(\(rawValue))"
        }
    }
}

/// `raftpb.Entry` with owned data: what a writer saves and what a consumer keeps.
public struct RaftEntry: Equatable, Sendable {
    public var type: RaftEntryType
    public var term: UInt64
    public var index: UInt64
    /// Empty for leader no-op entries (etcd then writes no field 4).
    public var data: [UInt8]

    public init(type: RaftEntryType = .normal, term: UInt64, index: UInt64, data: [UInt8] = []) {
        self.type = type
        self.term = term
        self.index = index
        self.data = data
    }
}

/// `raftpb.HardState{term=1, vote=2, commit=3}`.
public struct HardState: Equatable, Sendable {
    public var term: UInt64
    public var vote: UInt64
    public var commit: UInt64

    public init(term: UInt64 = 0, vote: UInt64 = 0, commit: UInt64 = 0) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }

    /// etcd writes no state record for an all-zero HardState.
    public var isEmpty: Bool { term == 0 && vote == 0 && commit == 0 }
}

/// `walpb.Snapshot{index=1, term=2}`; v3.5's `conf_state` (field 3) is skipped when read.
public struct WALSnapshot: Equatable, Sendable {
    public var index: UInt64
    public var term: UInt64

    public init(index: UInt64 = 0, term: UInt64 = 0) {
        self.index = index
        self.term = term
    }
}

/// A decoded `walpb.Record` whose data borrows the segment buffer.
struct DecodedRecord {
    var type: Int64 = 0
    var crc: UInt32 = 0
    var data = UnsafeRawBufferPointer(start: nil, count: 0)

    init(_ bytes: UnsafeRawBufferPointer) throws(ProtobufError) {
        var reader = ProtobufReader(bytes)
        while !reader.isAtEnd {
            let (field, wireType) = try reader.readTag()
            switch field {
            case 1: type = Int64(bitPattern: try reader.readVarint(field: field, wireType: wireType))
            // gogoproto accumulates the varint into a uint32, keeping the low 32 bits.
            case 2: crc = UInt32(truncatingIfNeeded: try reader.readVarint(field: field, wireType: wireType))
            case 3: data = try reader.readBytes(field: field, wireType: wireType)
            default: try reader.skip(field: field, wireType: wireType)
            }
        }
    }
}

/// A decoded `raftpb.Entry` whose data borrows the segment buffer.
struct DecodedEntry {
    var type = RaftEntryType.normal
    var term: UInt64 = 0
    var index: UInt64 = 0
    var data = UnsafeRawBufferPointer(start: nil, count: 0)

    init(_ bytes: UnsafeRawBufferPointer) throws(ProtobufError) {
        var reader = ProtobufReader(bytes)
        while !reader.isAtEnd {
            let (field, wireType) = try reader.readTag()
            switch field {
            case 1: type = RaftEntryType(rawValue: Int32(truncatingIfNeeded: try reader.readVarint(field: field, wireType: wireType)))
            case 2: term = try reader.readVarint(field: field, wireType: wireType)
            case 3: index = try reader.readVarint(field: field, wireType: wireType)
            case 4: data = try reader.readBytes(field: field, wireType: wireType)
            default: try reader.skip(field: field, wireType: wireType)
            }
        }
    }
}

extension HardState {
    init(decoding bytes: UnsafeRawBufferPointer) throws(ProtobufError) {
        self.init()
        var reader = ProtobufReader(bytes)
        while !reader.isAtEnd {
            let (field, wireType) = try reader.readTag()
            switch field {
            case 1: term = try reader.readVarint(field: field, wireType: wireType)
            case 2: vote = try reader.readVarint(field: field, wireType: wireType)
            case 3: commit = try reader.readVarint(field: field, wireType: wireType)
            default: try reader.skip(field: field, wireType: wireType)
            }
        }
    }

    /// All three fields, always written (gogoproto non-nullable).
    var encoded: [UInt8] {
        var writer = ProtobufWriter()
        writer.appendVarint(field: 1, term)
        writer.appendVarint(field: 2, vote)
        writer.appendVarint(field: 3, commit)
        return writer.bytes
    }
}

extension WALSnapshot {
    init(decoding bytes: UnsafeRawBufferPointer) throws(ProtobufError) {
        self.init()
        var reader = ProtobufReader(bytes)
        while !reader.isAtEnd {
            let (field, wireType) = try reader.readTag()
            switch field {
            case 1: index = try reader.readVarint(field: field, wireType: wireType)
            case 2: term = try reader.readVarint(field: field, wireType: wireType)
            default: try reader.skip(field: field, wireType: wireType)
            }
        }
    }

    var encoded: [UInt8] {
        var writer = ProtobufWriter()
        writer.appendVarint(field: 1, index)
        writer.appendVarint(field: 2, term)
        return writer.bytes
    }
}

extension RaftEntry {
    /// Fields in number order (Type, Term, Index, Data) as on disk; Data only when non-empty.
    var encoded: [UInt8] {
        var writer = ProtobufWriter()
        writer.appendVarint(field: 1, UInt64(bitPattern: Int64(type.rawValue)))
        writer.appendVarint(field: 2, term)
        writer.appendVarint(field: 3, index)
        if !data.isEmpty { writer.appendBytes(field: 4, data) }
        return writer.bytes
    }
}
