import EpochIO
import Glibc

/// One mount as /proc/self/mountinfo lists it (proc(5)), with the kernel's `\ooo` escapes
/// (space, tab, newline and backslash) undone.
public struct MountInfo: Equatable, Sendable {
    /// `major:minor`, which is also the name of a FUSE mount's bdi in /sys/class/bdi.
    public let device: String
    public let mountPoint: String
    /// What was mounted: `epochfs:BACKING` for an epochfs mount.
    public let source: String
}

/// The mounts this process sees.
public enum MountTable {
    /// /proc/self/mountinfo (or another process's), in mount order: of several mounts on one
    /// point, the last is the one in view.
    public static func read(of table: String = "/proc/self/mountinfo") throws -> [MountInfo] {
        parse(try readToEnd(table))
    }

    /// Each line is `ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE
    /// SUPER-OPTIONS`; lines without those fields are skipped.
    public static func parse(_ mountinfo: String) -> [MountInfo] {
        mountinfo.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count > 6, let separator = fields[6...].firstIndex(of: "-"), separator + 2 < fields.count else {
                return nil
            }
            return MountInfo(device: String(fields[2]), mountPoint: unescape(fields[4]), source: unescape(fields[separator + 2]))
        }
    }

    private static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var bytes: [UInt8] = []
        var input = field.utf8
        while let byte = input.popFirst() {
            if byte == UInt8(ascii: "\\"), let value = octalByte(input.prefix(3)) {
                bytes.append(value)
                input = input.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Three octal digits of at most 0377; nil for anything else.
    private static func octalByte(_ digits: Substring.UTF8View) -> UInt8? {
        guard digits.count == 3 else { return nil }
        var value = 0
        for digit in digits {
            guard (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(digit) else { return nil }
            value = value << 3 | Int(digit - UInt8(ascii: "0"))
        }
        return UInt8(exactly: value)
    }

    /// procfs files report size 0: read to the end rather than by size.
    private static func readToEnd(_ path: String) throws -> String {
        let fd = retryingEINTR { open(path, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { throw SystemError("open", path: path) }
        defer { close(fd) }
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = chunk.withUnsafeMutableBytes { buffer in retryingEINTR { Glibc.read(fd, buffer.baseAddress, buffer.count) } }
            guard count >= 0 else { throw SystemError("read", path: path) }
            if count == 0 { break }
            contents += chunk[..<count]
        }
        return String(decoding: contents, as: UTF8.self)
    }
}
