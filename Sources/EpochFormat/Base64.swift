/// One of RFC 4648's base64 alphabets: the 64 digits in value order (the alphabets differ only
/// in the last two) and whether an encoding is padded with `=` to a multiple of four digits.
public protocol Base64Alphabet {
    static var digits: [UInt8] { get }
    static var isPadded: Bool { get }
}

/// RFC 4648 §4, padded: what JSON readers expect (`Data(base64Encoded:)` among them).
public enum Base64StandardAlphabet: Base64Alphabet {
    public static let digits = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    public static let isPadded = true
}

/// RFC 4648 §5, unpadded: safe in file names, never contains "." or "/".
public enum Base64URLAlphabet: Base64Alphabet {
    public static let digits = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    public static let isPadded = false

    /// The value of each byte as a digit, 0xff for bytes that are not digits.
    static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xff, count: 256)
        for (value, digit) in digits.enumerated() { table[Int(digit)] = UInt8(value) }
        return table
    }()
}

/// `wal dump --json`'s data.
public typealias Base64Standard = Base64<Base64StandardAlphabet>
/// Encrypted names and symlink targets in the backing directory.
public typealias Base64URL = Base64<Base64URLAlphabet>

/// Base64 in `Alphabet`: one encoder for every use, the alphabets differing only in data.
public enum Base64<Alphabet: Base64Alphabet> {
    /// The length of the encoding of `byteCount` bytes.
    public static func encodedCount(_ byteCount: Int) -> Int {
        Alphabet.isPadded ? (byteCount + 2) / 3 * 4 : (byteCount * 4 + 2) / 3
    }

    /// Encodes `bytes` straight into `out`, which has room for `encodedCount(bytes.count)`
    /// digits, and returns that count: for output buffers that would rather not build a string
    /// per entry.
    public static func encode(_ bytes: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) -> Int {
        // Through a pointer: digit indexes are below 64 by construction, and checking them
        // against the array's bounds costs a fifth of the loop.
        Alphabet.digits.withUnsafeBufferPointer { digits in
            var input = 0
            var position = 0
            while input + 3 <= bytes.count {
                let group = UInt32(bytes[input]) << 16 | UInt32(bytes[input + 1]) << 8 | UInt32(bytes[input + 2])
                out[position] = digits[Int(group >> 18)]
                out[position + 1] = digits[Int(group >> 12 & 63)]
                out[position + 2] = digits[Int(group >> 6 & 63)]
                out[position + 3] = digits[Int(group & 63)]
                input += 3
                position += 4
            }
            let left = bytes.count - input
            guard left > 0 else { return position }
            let group = UInt32(bytes[input]) << 16 | (left == 2 ? UInt32(bytes[input + 1]) << 8 : 0)
            out[position] = digits[Int(group >> 18)]
            out[position + 1] = digits[Int(group >> 12 & 63)]
            position += 2
            if left == 2 {
                out[position] = digits[Int(group >> 6 & 63)]
                position += 1
            }
            guard Alphabet.isPadded else { return position }
            while position % 4 != 0 {
                out[position] = UInt8(ascii: "=")
                position += 1
            }
            return position
        }
    }

    public static func encode(_ bytes: [UInt8]) -> String {
        bytes.withUnsafeBytes { input in
            String(unsafeUninitializedCapacity: encodedCount(input.count)) { encode(input, into: UnsafeMutableRawBufferPointer($0)) }
        }
    }
}

extension Base64 where Alphabet == Base64URLAlphabet {
    /// nil for characters outside the alphabet, padding, or an impossible length. Only names
    /// in the backing directory are ever decoded.
    public static func decode(_ text: String) -> [UInt8]? {
        let values = Base64URLAlphabet.values
        let chars = Array(text.utf8)
        guard chars.count % 4 != 1 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        for char in chars {
            let value = values[Int(char)]
            guard value != 0xff else { return nil }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        // Leftover bits must be zero, so every byte string has exactly one encoding.
        guard accumulator & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return out
    }
}
