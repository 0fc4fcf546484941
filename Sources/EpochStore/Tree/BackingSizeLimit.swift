import CLinux
import EpochIO
import Glibc
import Synchronization

/// The largest file the backing file system takes (its `s_maxbytes`: 16 TiB − 4 KiB on ext4
/// with 4 KiB blocks, 2^63 − 1 on tmpfs). Found once, when a request first reaches past
/// `alwaysTaken`, by growing a nameless file (O_TMPFILE) in the backing root with ftruncate:
/// sparse, never written, gone at close. Knowing it, a request the backing file would refuse
/// gets EFBIG before anything is changed, instead of failing halfway (a partial last block
/// already grown when the backing ftruncate says EFBIG).
final class BackingSizeLimit: Sendable {
    /// Every file system epochfs can run on takes files this large.
    static let alwaysTaken = 1 << 31

    private let found = Mutex<Int?>(nil)

    /// The limit; `Int.max` where the probe cannot run (a read-only or full backing dir, no
    /// O_TMPFILE): requests then fail with what the backing file system answers.
    func value(io: any BackingIO, root: FileDescriptor) -> Int {
        if let known = found.withLock({ $0 }) { return known }
        guard let probe = try? io.open(".", in: root, flags: epochfs_O_TMPFILE | O_RDWR | O_CLOEXEC, mode: 0o600) else {
            return Int.max
        }
        defer { io.close(probe) }
        // The largest size ftruncate takes, by bisection: at most 63 calls.
        var taken = 0, refused = Int.max
        if (try? io.ftruncate(probe, size: Int.max)) != nil { taken = Int.max }
        while refused - taken > 1 {
            let middle = taken + (refused - taken) / 2
            do {
                try io.ftruncate(probe, size: middle)
                taken = middle
            } catch let error as SystemError where error.errno == EFBIG || error.errno == EINVAL {
                refused = middle
            } catch {
                return Int.max
            }
        }
        found.withLock { $0 = taken }
        return taken
    }
}
