import EpochSystem
import EpochVolume
import Foundation
import Glibc
import Logging
import Synchronization

/// The kernel gives a FUSE mount 128 KiB of readahead and lets the file system only lower it
/// in its INIT reply; as root it can be raised in sysfs. 1 MiB lets a sequential read decrypt
/// in bigger batches per round trip (bench/RESULTS.md: about 1.8x on a 512 MiB `dd`).
/// The kernel applies the INIT reply after the daemon starts serving and resets readahead
/// then, so the setting is written when the first request after INIT arrives.
final class Readahead: Sendable {
    static let kibibytes = 1024

    private let setting = Mutex<String?>(nil)
    private let pending = Atomic<Bool>(false)
    private let logger = Logger(label: "epochfs.mount")

    /// Finds the mount's bdi through /proc/self/mountinfo (a stat of the mountpoint would wait
    /// for this very daemon, which does not serve requests yet).
    func prepare(mountpoint: String) {
        guard geteuid() == 0, let mount = try? MountTable.read().last(where: { $0.mountPoint == mountpoint }) else { return }
        setting.withLock { $0 = "/sys/class/bdi/\(mount.device)/read_ahead_kb" }
        pending.store(true, ordering: .releasing)
    }

    /// Called on every request; writes the setting once, on the first one after INIT.
    func applyIfPending() {
        guard pending.load(ordering: .relaxed), pending.exchange(false, ordering: .acquiring),
              let path = setting.withLock({ $0 }) else { return }
        do {
            try "\(Self.kibibytes)\n".write(toFile: path, atomically: false, encoding: .utf8)
        } catch {
            logger.info("readahead left at the kernel's default", metadata: ["setting": "\(path)", "error": "\(error)"])
        }
    }
}
