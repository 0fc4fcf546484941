import EpochHeader
import Support
import EpochFormat
import EpochVolume
import Synchronization

/// The crash a fault stands for; thrown out of the store in place of the process dying.
struct SimulatedCrash: Error, Equatable {
    let step: FaultyHeaderStore.Fault
}

struct SimulatedIOError: Error {}

/// A header store in memory that models a disk with a page cache: writes land in `volatile`,
/// `sync()` copies them to `durable`, and `restart()` (a crash and reboot) throws away
/// everything that was not synced. One armed fault fires at its step of the next commit: at its
/// first slot write (the commit itself), or at a later one (the copy over the other slot).
final class FaultyHeaderStore: HeaderStore, Sendable {
    enum Fault: Equatable, Sendable, CustomStringConvertible {
        /// Dies before the slot write starts.
        case crashBeforeWrite
        /// Dies mid-write with the first `durableBytes` of the slot on disk, the rest not.
        case tornWrite(durableBytes: Int)
        /// Dies after the write returned, before fsync: the write is lost.
        case crashAfterWriteBeforeSync
        /// fsync made the write durable, then the process died before switching to it.
        case crashAfterSyncBeforeSwitch
        /// fsync reports an I/O error; the write never reached the disk.
        case failSync

        var description: String {
            switch self {
            case .crashBeforeWrite: "crash before write"
            case let .tornWrite(bytes): "torn write after \(bytes) bytes"
            case .crashAfterWriteBeforeSync: "crash after write, before fsync"
            case .crashAfterSyncBeforeSwitch: "crash after fsync, before switch"
            case .failSync: "fsync fails"
            }
        }
    }

    private struct State {
        var durable = [UInt8](repeating: 0, count: 2 * HeaderSlot.size)
        var volatile = [UInt8](repeating: 0, count: 2 * HeaderSlot.size)
        var fault: Fault?
        /// The slot write (counted from 1 since arming) at which the fault fires.
        var faultAtWrite = 1
        var writes = 0
        var writesSinceArmed = 0

        /// The armed fault, once its write has come.
        var firing: Fault? { writesSinceArmed >= faultAtWrite ? fault : nil }
    }

    private let state = Mutex(State())

    /// Slot writes since creation or the last `resetWriteCount()`.
    var writeCount: Int { state.withLock { $0.writes } }
    func resetWriteCount() { state.withLock { $0.writes = 0 } }

    func arm(_ fault: Fault, atWrite write: Int = 1) {
        state.withLock {
            $0.fault = fault
            $0.faultAtWrite = write
            $0.writesSinceArmed = 0
        }
    }

    /// A crash and reboot: what was not synced is gone; the fault is spent.
    func restart() {
        state.withLock {
            $0.volatile = $0.durable
            $0.fault = nil
        }
    }

    /// Rewrites a slot on "disk" directly (for forging test states).
    func overwrite(slot: Int, with bytes: [UInt8]) {
        state.withLock {
            $0.durable.replaceSubrange(range(slot), with: bytes)
            $0.volatile.replaceSubrange(range(slot), with: bytes)
        }
    }

    func read(slot: Int) throws -> [UInt8] {
        state.withLock { Array($0.volatile[range(slot)]) }
    }

    func write(slot: Int, bytes: [UInt8]) throws {
        try state.withLock { (s: inout State) throws in
            s.writes += 1
            s.writesSinceArmed += 1
            switch s.firing {
            case .crashBeforeWrite:
                throw SimulatedCrash(step: .crashBeforeWrite)
            case let .tornWrite(durableBytes):
                let start = slot * HeaderSlot.size
                s.durable.replaceSubrange(start..<start + durableBytes, with: bytes.prefix(durableBytes))
                throw SimulatedCrash(step: .tornWrite(durableBytes: durableBytes))
            default:
                s.volatile.replaceSubrange(range(slot), with: bytes)
            }
        }
    }

    func sync() throws {
        try state.withLock { (s: inout State) throws in
            switch s.firing {
            case .crashAfterWriteBeforeSync:
                throw SimulatedCrash(step: .crashAfterWriteBeforeSync)
            case .failSync:
                s.volatile = s.durable // the kernel dropped the dirty pages it could not write
                throw SimulatedIOError()
            case .crashAfterSyncBeforeSwitch:
                s.durable = s.volatile
                throw SimulatedCrash(step: .crashAfterSyncBeforeSwitch)
            default:
                s.durable = s.volatile
            }
        }
    }

    func withExclusiveLock<R>(_ body: () throws -> R) throws -> R { try body() }

    private func range(_ slot: Int) -> Range<Int> { slot * HeaderSlot.size..<(slot + 1) * HeaderSlot.size }
}
