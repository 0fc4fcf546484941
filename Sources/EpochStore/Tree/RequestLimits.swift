import EpochIO
import Glibc

/// The checks every offset and size of a request passes before the content code computes
/// block indices and backing offsets from it (ContentLimits): what ext4 answers past its
/// largest file, the daemon answers past the volume's.
extension BackingTree {
    /// The largest plaintext file: what the backing file system's largest file holds, and
    /// never more than backing offsets in `off_t` can address (docs/FORMAT.md §6.3).
    var maxFileSize: Int {
        ContentLimits.maxPlaintextSize(volume.contentLayout, backingLimit: backingSizeLimit.value(io: volume.io, root: root.fd))
    }

    /// EINVAL for a negative offset or length, EFBIG for a range that ends past `maxFileSize`.
    func checkRange(offset: Int, length: Int, _ operation: String) throws {
        // Small ranges, nearly all of them, are taken without asking for the limit.
        guard ContentLimits.refusal(offset: offset, length: length, maxSize: BackingSizeLimit.alwaysTaken) != nil else { return }
        if let errno = ContentLimits.refusal(offset: offset, length: length, maxSize: maxFileSize) {
            throw SystemError(operation, path: "", errno: errno)
        }
    }

    /// How many of `count` bytes a write at `offset` may write: all of them below the largest
    /// file, those up to it for a write reaching past it; EFBIG for one starting at or past it.
    func writableCount(at offset: Int, _ count: Int) throws -> Int {
        guard offset >= 0, count >= 0 else { throw SystemError("write", path: "", errno: EINVAL) }
        guard count > 0, ContentLimits.refusal(offset: offset, length: count, maxSize: BackingSizeLimit.alwaysTaken) != nil else {
            return count
        }
        let maxSize = maxFileSize
        guard offset < maxSize else { throw SystemError("write", path: "", errno: EFBIG) }
        return min(count, maxSize - offset)
    }
}
