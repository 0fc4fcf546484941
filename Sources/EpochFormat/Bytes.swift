/// Big-endian encoding helpers. Every integer epochfs writes is big-endian.
public struct ByteWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    public mutating func append(_ value: UInt8) { bytes.append(value) }
    public mutating func append(_ value: UInt16) { appendBigEndian(value) }
    public mutating func append(_ value: UInt32) { appendBigEndian(value) }
    public mutating func append(_ value: UInt64) { appendBigEndian(value) }
    public mutating func append(_ epoch: Epoch) { appendBigEndian(epoch.rawValue) }
    public mutating func append<S: Sequence<UInt8>>(contentsOf other: S) { bytes.append(contentsOf: other) }
    public mutating func appendZeros(_ count: Int) { bytes.append(contentsOf: repeatElement(0, count: count)) }

    private mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Reads big-endian fields; running past the end is a `FormatError.truncated`.
public struct ByteReader {
    private let bytes: ArraySlice<UInt8>
    public private(set) var offset: Int
    private let what: String

    public init(_ bytes: ArraySlice<UInt8>, what: String) {
        self.bytes = bytes
        self.offset = bytes.startIndex
        self.what = what
    }

    public var remaining: Int { bytes.endIndex - offset }

    public mutating func read(_ count: Int) throws(FormatError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else { throw FormatError.truncated(what: what, needed: count, available: remaining) }
        defer { offset += count }
        return bytes[offset..<offset + count]
    }

    public mutating func readUInt8() throws(FormatError) -> UInt8 { try read(1).first! }
    public mutating func readUInt16() throws(FormatError) -> UInt16 { try readInteger() }
    public mutating func readUInt32() throws(FormatError) -> UInt32 { try readInteger() }
    public mutating func readUInt64() throws(FormatError) -> UInt64 { try readInteger() }
    public mutating func readEpoch() throws(FormatError) -> Epoch { Epoch(rawValue: try readInteger()) }

    private mutating func readInteger<T: FixedWidthInteger>() throws(FormatError) -> T {
        try read(MemoryLayout<T>.size).reduce(T(0)) { ($0 << 8) | T($1) }
    }
}

/// Structural errors in epochfs's own byte formats (header slot, keyring).
public enum FormatError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(what: String, needed: Int, available: Int)
    case invalid(what: String, reason: String)

    public var description: String {
        switch self {
        case let .truncated(what, needed, available): "\(what) is truncated (needed \(needed) more bytes, \(available) left)"
        case let .invalid(what, reason): "\(what) is invalid: \(reason)"
        }
    }
}

extension Array where Element == UInt8 {
    /// Lower-case hex, for identifiers (never for keys).
    public var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(count * 2)
        for byte in self {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The value of one ASCII hex digit, either case; nil for any other byte.
public func hexDigitValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
    default: nil
    }
}
