import Glibc

/// The largest plaintext file a volume holds (docs/FORMAT.md §6.3). Past it, requests get
/// what ext4 answers past its own largest file: EFBIG. Every offset and size of a request is
/// checked against it before the content code turns it into block indices and backing offsets,
/// which must never overflow `Int` (`off_t`).
public enum ContentLimits {
    /// Kept free below `Int.max`: an O_APPEND write is checked against the size it saw before
    /// it runs, and concurrent appends may each pass that check; this much growth past the
    /// limit still computes every backing offset without overflow.
    static let appendHeadroom = 1 << 32

    /// The largest plaintext size P, a whole number of blocks, for which every backing offset
    /// the content code computes for data inside P (up to the end of its last block, which a
    /// fallocate reserves whole) is at most `backingLimit`, the largest backing file the
    /// backing file system allows, and at most `Int.max - appendHeadroom`.
    public static func maxPlaintextSize(_ layout: ContentLayout, backingLimit: Int) -> Int {
        let limit = min(backingLimit, Int.max - appendHeadroom)
        guard limit > layout.dataOffset else { return 0 }
        return (limit - layout.dataOffset) / layout.sealedBlockSize * layout.blockSize
    }

    /// What a request reaching from `offset` over `length` bytes gets: nil when it may go on,
    /// or the errno ext4 answers: EINVAL for a negative offset or length, EFBIG when its end
    /// is past `maxSize` or does not fit in `off_t`.
    public static func refusal(offset: Int, length: Int, maxSize: Int) -> Int32? {
        guard offset >= 0, length >= 0 else { return EINVAL }
        let (end, overflow) = offset.addingReportingOverflow(length)
        return overflow || end > maxSize ? EFBIG : nil
    }
}
