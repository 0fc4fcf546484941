import EpochIO
import EpochFormat
import Glibc

/// A place in the log: a segment file and a byte offset in it (the start of a frame).
public struct WALLocation: Hashable, Sendable, CustomStringConvertible {
    public let segment: String
    public let offset: Int64

    public init(segment: String, offset: Int64) {
        self.segment = segment
        self.offset = offset
    }

    public var description: String { "\(segment) at offset \(offset)" }
}

/// Why the reader failed. Every corruption names the segment and the frame's byte offset.
public enum WALError: Error, Sendable, CustomStringConvertible {
    case io(path: String, operation: String, errno: Int32)
    case noSegments(directory: String)
    case sequenceGap(previous: String, next: String)
    /// Damage that is not a torn tail of the last segment. `lastIndex` is the index of the
    /// last entry read before it, when there was one.
    case corrupt(WALCorruption, at: WALLocation, lastIndex: UInt64?)
    /// An entry above the cutover did not open. Nothing at or after `index` was delivered;
    /// `lastDelivered` is the index of the last entry that was.
    case unwrapFailed(index: UInt64, lastDelivered: UInt64?, at: WALLocation, reason: UnwrapFailure)
    /// The writer refuses a directory that already holds segments.
    case segmentsExist(directory: String)
    /// The writer refuses records etcd 3.4's decoder would reject (10 MiB limit).
    case recordTooLarge(length: Int, limit: Int)

    public var description: String {
        switch self {
        case let .io(path, operation, code):
            "\(operation) \(path) failed: \(String(cString: strerror(code)))"
        case let .noSegments(directory):
            "no WAL segments (%016x-%016x.wal) in \(directory)"
        case let .sequenceGap(previous, next):
            "WAL segment sequence is not consecutive: \(previous) is followed by \(next)"
        case let .corrupt(corruption, location, lastIndex):
            "corrupt WAL: \(corruption) in \(location)" + (lastIndex.map { " (after entry index \($0))" } ?? "")
        case let .unwrapFailed(index, lastDelivered, location, reason):
            "entry index \(index) above the cutover did not open: \(reason) (\(location); "
                + (lastDelivered.map { "last delivered index \($0))" } ?? "no entry delivered)")
        case let .segmentsExist(directory):
            "\(directory) already holds WAL segments"
        case let .recordTooLarge(length, limit):
            "WAL record of \(length) bytes is over etcd's limit of \(limit) bytes"
        }
    }
}

/// What is wrong with the bytes at a location.
public enum WALCorruption: Equatable, Sendable, CustomStringConvertible {
    case badLengthWord(UInt64)
    /// 1–7 bytes left where a length word starts, outside the last segment.
    case truncatedLengthWord(available: Int64)
    /// The frame runs past the end of a segment other than the last.
    case truncatedRecord(needed: Int64, available: Int64)
    case malformedRecord(String)
    case recordCRCMismatch(stored: UInt32, computed: UInt32)
    /// A segment's crc record does not carry the running CRC of everything before it.
    case chainCRCMismatch(stored: UInt32, running: UInt32)
    case missingCRCRecord(recordType: Int64)
    case unexpectedRecordType(Int64)
    case conflictingMetadata
    case malformedPayload(WALRecordType, String)
    case entryIndexZero
    case indexGap(expected: UInt64, found: UInt64)

    public var description: String {
        switch self {
        case let .badLengthWord(word): "invalid frame length word 0x\(String(word, radix: 16))"
        case let .truncatedLengthWord(available): "length word cut short (\(available) of 8 bytes) before the last segment"
        case let .truncatedRecord(needed, available):
            "record needs \(needed) bytes but the segment has \(available) left, before the last segment"
        case let .malformedRecord(reason): "malformed walpb.Record: \(reason)"
        case let .recordCRCMismatch(stored, computed):
            "record crc mismatch (stored 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16)))"
        case let .chainCRCMismatch(stored, running):
            "crc chain broken (crc record 0x\(String(stored, radix: 16)), running 0x\(String(running, radix: 16)))"
        case let .missingCRCRecord(type): "segment starts with a record of type \(type), not a crc record"
        case let .unexpectedRecordType(type): "unexpected record type \(type)"
        case .conflictingMetadata: "metadata differs from the first segment's"
        case let .malformedPayload(type, reason): "malformed \(type) record payload: \(reason)"
        case .entryIndexZero: "entry with index 0"
        case let .indexGap(expected, found): "entry index \(found) where \(expected) or lower was expected"
        }
    }
}

/// Why an entry above the cutover did not open.
public enum UnwrapFailure: Error, Equatable, Sendable, CustomStringConvertible {
    /// The gate is armed (cutover below u64 max) but has no raft key lookup.
    case noRaftKeys
    case layout(PayloadLayoutError)
    /// Only EntryNormal entries carry envelopes; conf changes pass, unknown types fail closed.
    case unsupportedEntryType(RaftEntryType)
    /// Structure, key id, retired or unknown key, or tag: the envelope layer's own verdict.
    case envelope(EnvelopeError)
    /// The key lookup failed with an error of its own.
    case keyLookup(String)
    /// The cipher failed for a reason other than authentication.
    case crypto(String)

    public var description: String {
        switch self {
        case .noRaftKeys: "no raft keys configured"
        case let .layout(error): error.description
        case let .unsupportedEntryType(type): "\(type) entries carry no raft envelope"
        case let .envelope(error): error.description
        case let .keyLookup(reason): "raft key lookup failed: \(reason)"
        case let .crypto(reason): "cipher failure: \(reason)"
        }
    }
}

/// The clear header of the `proposal` layout did not parse.
public enum PayloadLayoutError: Error, Equatable, Sendable, CustomStringConvertible {
    case proposalTooShort(length: Int)
    case badProposalVersion(UInt8)

    public var description: String {
        switch self {
        case let .proposalTooShort(length):
            "proposal is \(length) bytes, shorter than its \(ProposalHeader.size)-byte header"
        case let .badProposalVersion(version): "unsupported proposal envelope version 0x\(String(version, radix: 16))"
        }
    }
}

/// Where the readable log ended.
public enum WALEnd: Equatable, Sendable, CustomStringConvertible {
    /// End of the last segment at a frame boundary, or a zero length word (preallocated space).
    case clean(WALLocation)
    /// A torn write in the last segment, as etcd's decoder treats it (io.ErrUnexpectedEOF):
    /// everything from `location` on is ignored, as etcd's read-only open ignores it.
    case torn(WALLocation, TornTail)

    public var description: String {
        switch self {
        case let .clean(location): "clean end in \(location)"
        case let .torn(location, reason): "torn tail in \(location): \(reason)"
        }
    }
}

public enum TornTail: Equatable, Sendable, CustomStringConvertible {
    case shortLengthWord(available: Int64)
    case shortRecord(needed: Int64, available: Int64)
    /// The record did not decode or its CRC failed, and a 512-byte sector of it is all zeros.
    case zeroSector

    public var description: String {
        switch self {
        case let .shortLengthWord(available): "length word cut short (\(available) of 8 bytes)"
        case let .shortRecord(needed, available): "record needs \(needed) bytes, \(available) written"
        case .zeroSector: "record with an all-zero sector"
        }
    }
}

/// Runs backing calls, reporting a failure as the WAL's own `.io` error about `path`.
func walIO<R>(_ path: String, _ body: () throws -> R) throws(WALError) -> R {
    do {
        return try body()
    } catch let error as SystemError {
        throw .io(path: path, operation: error.operation, errno: error.errno)
    } catch {
        throw .io(path: path, operation: "\(error)", errno: EIO)
    }
}
