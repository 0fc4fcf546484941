/// etcd's frame length word (`wal/encoder.go` encodeFrameSize): a little-endian u64 whose low
/// 56 bits are the record length N and whose top byte is `0x80 | pad` when `pad =
/// (8 - N % 8) % 8` is non-zero, else 0x00. Frames are `word ‖ record ‖ pad zero bytes`.
enum Frame {
    static let wordSize = 8
    static let lengthMask: UInt64 = 0x00ff_ffff_ffff_ffff

    static func padding(forRecordLength length: Int) -> Int { (8 - length % 8) % 8 }

    static func lengthWord(recordLength: Int) -> UInt64 {
        let pad = padding(forRecordLength: recordLength)
        return UInt64(recordLength) | (pad == 0 ? 0 : UInt64(0x80 | pad) << 56)
    }

    /// Decodes a non-zero length word into (record length, padding). Stricter than etcd, which
    /// ignores the top byte's other bits: only 0x00 and 0x80…0x87 are accepted, and the padding
    /// must be the one etcd's encoder writes for that length. 0x80 (flag set, no padding)
    /// is accepted for lengths that need none, as etcd's decoder would read it the same way.
    static func decode(_ word: UInt64) -> (length: Int64, padding: Int64)? {
        let top = UInt8(truncatingIfNeeded: word >> 56)
        let length = Int64(word & lengthMask)
        guard top == 0 || top & 0xf8 == 0x80 else { return nil }
        let pad = Int64(top & 0x07)
        guard pad == Int64(padding(forRecordLength: Int(length))) else { return nil }
        return (length, pad)
    }
}
