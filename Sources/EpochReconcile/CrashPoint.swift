import Glibc
import Synchronization

/// Fault injection for the kill tests: `EPOCHFS_RECONCILE_CRASH_AT=STEP[:N]` makes the
/// reconciler kill itself with SIGKILL (what `kill -9` does) the Nth time (default first) it
/// reaches STEP. The steps, in a pass: `pass-start`; per volume `before-read`,
/// `before-rekey` (target known, nothing written), `after-rekey` (committed, not yet read
/// back or reported); `pass-end` (every volume done, nothing reported).
enum CrashPoint {
    private static let setting: (step: String, count: Int)? = {
        guard let raw = getenv("EPOCHFS_RECONCILE_CRASH_AT") else { return nil }
        let parts = String(cString: raw).split(separator: ":")
        guard let step = parts.first else { return nil }
        return (String(step), parts.count > 1 ? Int(parts[1]) ?? 1 : 1)
    }()
    private static let reached = Atomic<Int>(0)

    static func reach(_ step: String) {
        guard let setting, setting.step == step else { return }
        if reached.add(1, ordering: .relaxed).newValue == setting.count { kill(getpid(), SIGKILL) }
    }
}
