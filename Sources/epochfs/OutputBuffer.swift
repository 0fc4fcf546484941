import CEscape
import EpochFormat
import EpochWAL
import Glibc

/// Standard output through one reusable buffer, written out in large pieces. Entries are
/// formatted straight into the buffer through a pointer: per-byte appends to an array cost
/// more than the decryption. 64 KiB stays in the CPU's L2 cache while it is filled, and is a
/// pipe's default capacity.
final class OutputBuffer {
    private static let capacity = 1 << 16
    private var storage = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)
    private var count = 0

    deinit { storage.deallocate() }

    func append(_ text: String) {
        var text = text
        text.withUTF8 { utf8 in withRoom(utf8.count) { $0.copyMemory(from: UnsafeRawBufferPointer(utf8)); return utf8.count } }
    }

    /// `INDEX TERM TYPE DATA`: printable ASCII kept, everything else (and `\`) as `\xNN`.
    func appendText(_ entry: WALEntry) {
        appendPrefix(entry, separator: " ")
        withRoom(4 * entry.data.count + 1) { out in
            let target = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
            let written = entry.data.isEmpty ? 0
                : epochfs_escape_text(entry.data.baseAddress!.assumingMemoryBound(to: UInt8.self), entry.data.count, target)
            target[written] = 0x0a
            return written + 1
        }
    }

    /// `{"index":…,"term":…,"type":"…","data":"BASE64"[,"key_id":…[,"request_id":…]]}`.
    func appendJSON(_ entry: WALEntry) {
        append(#"{"index":"#)
        appendPrefix(entry, separator: nil)
        withRoom(Base64Standard.encodedCount(entry.data.count)) { Base64Standard.encode(entry.data, into: $0) }
        append("\"")
        if let keyID = entry.envelopeKeyID {
            append(#","key_id":"#)
            appendDecimal(UInt64(keyID.rawValue))
        }
        if let requestID = entry.proposalRequestID {
            append(#","request_id":"#)
            appendDecimal(requestID)
        }
        append("}\n")
    }

    func flush() {
        var written = 0
        while written < count {
            let result = write(STDOUT_FILENO, storage.baseAddress! + written, count - written)
            if result < 0, errno == EINTR { continue }
            guard result > 0 else { break } // stdout closed: nothing left to tell anyone
            written += result
        }
        count = 0
    }

    /// Index, term and type: `I T TYPE ` as text, `I,"term":T,"type":"TYPE","data":"` as JSON.
    private func appendPrefix(_ entry: WALEntry, separator: String?) {
        appendDecimal(entry.index)
        append(separator ?? #","term":"#)
        appendDecimal(entry.term)
        append(separator ?? #","type":""#)
        append(entry.type == .normal ? "EntryNormal" : entry.type.description)
        append(separator ?? #"","data":""#)
    }

    private func appendDecimal(_ value: UInt64) {
        withRoom(20) { out in
            var digits = 1
            var rest = value / 10
            while rest > 0 { digits += 1; rest /= 10 }
            var remaining = value
            for position in stride(from: digits - 1, through: 0, by: -1) {
                out[position] = UInt8(ascii: "0") + UInt8(remaining % 10)
                remaining /= 10
            }
            return digits
        }
    }

    /// Lets `body` write up to `size` bytes at the end of the buffer; it returns how many it wrote.
    private func withRoom(_ size: Int, _ body: (UnsafeMutableRawBufferPointer) -> Int) {
        if count + size > storage.count {
            flush()
            if size > storage.count {
                storage.deallocate()
                storage = .allocate(byteCount: size, alignment: 64)
            }
        }
        count += body(UnsafeMutableRawBufferPointer(rebasing: storage[count..<count + size]))
    }
}
