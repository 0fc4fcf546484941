import EpochIO
import Glibc

/// A WAL segment file name, `%016x-%016x.wal` = `<seq>-<first expected raft index>.wal`.
public struct WALSegmentName: Hashable, Sendable, CustomStringConvertible {
    public let sequence: UInt64
    public let index: UInt64
    public let fileName: String

    /// The name etcd's `walName` gives a segment.
    public init(sequence: UInt64, index: UInt64) {
        self.sequence = sequence
        self.index = index
        fileName = Self.hex16(sequence) + "-" + Self.hex16(index) + ".wal"
    }

    /// Parses a name the way etcd's `parseWALName` does: it must end in `.wal`, then
    /// `Sscanf("%016x-%016x.wal")` reads up to 16 hex digits (either case), a dash, up to 16
    /// hex digits and `.wal`, ignoring anything after. Nil for every other name.
    public init?(fileName: String) {
        let bytes = Array(fileName.utf8)
        let suffix = Array(".wal".utf8)
        guard bytes.count >= suffix.count, Array(bytes.suffix(suffix.count)) == suffix else { return nil }
        var position = 0
        func hexNumber() -> UInt64? {
            var value: UInt64 = 0
            var digits = 0
            while digits < 16, position < bytes.count, let nibble = Self.nibble(bytes[position]) {
                value = value << 4 | UInt64(nibble)
                digits += 1
                position += 1
            }
            return digits > 0 ? value : nil
        }
        func literal(_ text: String) -> Bool {
            for byte in text.utf8 {
                guard position < bytes.count, bytes[position] == byte else { return false }
                position += 1
            }
            return true
        }
        guard let sequence = hexNumber(), literal("-"), let index = hexNumber(), literal(".wal") else { return nil }
        self.sequence = sequence
        self.index = index
        self.fileName = fileName
    }

    public var description: String { fileName }

    /// The segments of `directory` in etcd's order (file names sorted bytewise), skipping
    /// names that do not parse (`.tmp` spares, `.broken` copies, anything else), and
    /// requiring each sequence number to be exactly one more than the one before.
    public static func list(directory: String, io: any BackingIO = SystemIO()) throws(WALError) -> [WALSegmentName] {
        let entries = try walIO(directory) { try io.readdir(at: directory) }
        var names = entries.compactMap { WALSegmentName(fileName: $0.name) }
        names.sort { $0.fileName.utf8.lexicographicallyPrecedes($1.fileName.utf8) }
        guard !names.isEmpty else { throw .noSegments(directory: directory) }
        for (previous, next) in zip(names, names.dropFirst()) where previous.sequence &+ 1 != next.sequence {
            throw .sequenceGap(previous: previous.fileName, next: next.fileName)
        }
        return names
    }

    private static func nibble(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func hex16(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
