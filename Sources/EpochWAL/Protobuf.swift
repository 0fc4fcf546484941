/// The few protobuf wire-format operations walpb and raftpb need, over borrowed bytes.
/// Groups (wire types 3 and 4) appear in neither message and are rejected.
struct ProtobufReader {
    private let bytes: UnsafeRawBufferPointer
    private var position = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var isAtEnd: Bool { position == bytes.count }

    mutating func readVarint() throws(ProtobufError) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < bytes.count else { throw .truncated }
            guard shift < 64 else { throw .varintOverflow }
            let byte = bytes[position]
            position += 1
            value |= UInt64(byte & 0x7f) << shift
            if byte < 0x80 { return value }
            shift += 7
        }
    }

    /// The next field's number and wire type.
    mutating func readTag() throws(ProtobufError) -> (field: UInt64, wireType: UInt8) {
        let tag = try readVarint()
        let field = tag >> 3
        let wireType = UInt8(tag & 7)
        guard field > 0 else { throw .illegalTag(tag) }
        return (field, wireType)
    }

    mutating func readBytes() throws(ProtobufError) -> UnsafeRawBufferPointer {
        let length = try readVarint()
        guard length <= UInt64(bytes.count - position) else { throw .truncated }
        let start = position
        position += Int(length)
        return UnsafeRawBufferPointer(rebasing: bytes[start..<position])
    }

    /// Reads a field that must be a varint.
    mutating func readVarint(field: UInt64, wireType: UInt8) throws(ProtobufError) -> UInt64 {
        guard wireType == 0 else { throw .wrongWireType(field: field, wireType: wireType) }
        return try readVarint()
    }

    /// Reads a field that must be length-delimited.
    mutating func readBytes(field: UInt64, wireType: UInt8) throws(ProtobufError) -> UnsafeRawBufferPointer {
        guard wireType == 2 else { throw .wrongWireType(field: field, wireType: wireType) }
        return try readBytes()
    }

    /// Skips an unknown field, as protobuf decoders keep going past fields they do not know.
    mutating func skip(field: UInt64, wireType: UInt8) throws(ProtobufError) {
        switch wireType {
        case 0: _ = try readVarint()
        case 1: try advance(8)
        case 2: _ = try readBytes()
        case 5: try advance(4)
        default: throw .wrongWireType(field: field, wireType: wireType)
        }
    }

    private mutating func advance(_ count: Int) throws(ProtobufError) {
        guard count <= bytes.count - position else { throw .truncated }
        position += count
    }
}

enum ProtobufError: Error, Equatable, CustomStringConvertible {
    case truncated
    case varintOverflow
    case illegalTag(UInt64)
    case wrongWireType(field: UInt64, wireType: UInt8)

    var description: String {
        switch self {
        case .truncated: "protobuf ends inside a field"
        case .varintOverflow: "protobuf varint longer than 64 bits"
        case let .illegalTag(tag): "illegal protobuf tag \(tag)"
        case let .wrongWireType(field, wireType): "field \(field) has unexpected wire type \(wireType)"
        }
    }
}

/// Appends protobuf fields in the order and form gogoproto's marshaller emits them.
struct ProtobufWriter {
    var bytes: [UInt8] = []

    mutating func appendVarint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    mutating func appendVarint(field: UInt64, _ value: UInt64) {
        appendVarint(field << 3)
        appendVarint(value)
    }

    mutating func appendBytes(field: UInt64, _ value: [UInt8]) {
        appendVarint(field << 3 | 2)
        appendVarint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }
}
