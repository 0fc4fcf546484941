import Dispatch
import Foundation
import Glibc
import Support
import Synchronization
import Testing

/// Requests in flight when the daemon is killed or the mount is unmounted (issue 22 item 2, run
/// on both transports by `scripts/test.sh`): nothing acknowledged is lost, nobody hangs.
@Suite(.serialized) struct InFlightTests {
    static let recordSize = 4096

    /// The bytes of record `index` of writer `writer`.
    static func record(_ index: Int, of writer: Int) -> [UInt8] {
        (0..<recordSize).map { UInt8(truncatingIfNeeded: index &* 7 &+ $0 &+ writer &* 131) }
    }

    /// Appends records with an fdatasync each until told to stop or a call fails. `started` is
    /// signalled once `warmUp` records are acknowledged.
    final class Appender: Sendable {
        struct State {
            var acknowledged = 0
            var failure: Int32 = 0
            var stop = false
        }

        let writer: Int
        let path: String
        let state = Mutex(State())

        init(writer: Int, path: String) {
            self.writer = writer
            self.path = path
        }

        func run(warmUp: Int, started: DispatchSemaphore) {
            let fd = open(path, O_CREAT | O_WRONLY | O_APPEND, 0o644)
            guard fd >= 0 else {
                state.withLock { $0.failure = errno }
                started.signal()
                return
            }
            defer { close(fd) }
            var index = 0
            while !state.withLock({ $0.stop }) {
                let bytes = InFlightTests.record(index, of: writer)
                guard write(fd, bytes, bytes.count) == bytes.count, fdatasync(fd) == 0 else {
                    let failure = errno
                    state.withLock { $0.failure = failure }
                    if index < warmUp { started.signal() }
                    return
                }
                index += 1
                state.withLock { $0.acknowledged = index }
                if index == warmUp { started.signal() }
            }
        }
    }

    /// Starts `count` appenders on the volume and returns once each has `warmUp` records acknowledged.
    func startAppenders(_ volume: MountedVolume, count: Int, warmUp: Int, group: DispatchGroup) -> [Appender] {
        let started = DispatchSemaphore(value: 0)
        let appenders = (0..<count).map { Appender(writer: $0, path: volume.path("log\($0)")) }
        for appender in appenders {
            DispatchQueue.global().async(group: group) { appender.run(warmUp: warmUp, started: started) }
        }
        for _ in appenders { started.wait() }
        return appenders
    }

    /// Every acknowledged record of every appender reads back after a remount.
    func expectAcknowledgedRecords(_ volume: MountedVolume, _ appenders: [Appender]) throws {
        for appender in appenders {
            let acknowledged = appender.state.withLock { $0.acknowledged }
            guard let data = FileManager.default.contents(atPath: appender.path) else {
                let fd = open(appender.path, O_RDONLY)
                let failure = errno
                if fd >= 0 { close(fd) }
                Issue.record("writer \(appender.writer): cannot read \(appender.path) (open: \(fd >= 0 ? "ok" : String(cString: strerror(failure)))): \(volume.mountLog.suffix(3000))")
                continue
            }
            #expect(data.count >= acknowledged * Self.recordSize, "writer \(appender.writer)")
            let intact = (0..<acknowledged).allSatisfy { index in
                data[(index * Self.recordSize)..<((index + 1) * Self.recordSize)].elementsEqual(Self.record(index, of: appender.writer))
            }
            #expect(intact, "writer \(appender.writer): \(acknowledged) records acknowledged")
        }
    }

    @Test func aDaemonKilledWithRequestsInFlightLosesNothingAcknowledged() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let group = DispatchGroup()
        let appenders = startAppenders(volume, count: 4, warmUp: 20, group: group)
        #expect(appenders.allSatisfy { $0.state.withLock { $0.failure } == 0 })
        kill(try #require(volume.daemonPID), SIGKILL)
        // The writers' requests end with the connection: none may hang.
        #expect(group.wait(timeout: .now() + 30) == .success, "a writer hung after the daemon was killed")
        for appender in appenders {
            let failure = appender.state.withLock { $0.failure }
            // ECANCELED: what the kernel answers a request a ring held when the daemon died.
            #expect([ENOTCONN, ECONNABORTED, ECANCELED].contains(failure), "writer \(appender.writer): \(String(cString: strerror(failure)))")
        }
        volume.unmount()
        try volume.mount()
        try expectAcknowledgedRecords(volume, appenders)
    }

    @Test func anUnmountWithRequestsInFlightEndsTheDaemonWhenTheyAreDone() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let group = DispatchGroup()
        let appenders = startAppenders(volume, count: 4, warmUp: 20, group: group)
        // Lazy: the open files keep the connection until the writers close them.
        #expect(try run("/bin/fusermount3", ["-u", "-z", volume.mountpoint]).status == 0)
        for appender in appenders { appender.state.withLock { $0.stop = true } }
        #expect(group.wait(timeout: .now() + 30) == .success, "a writer hung after the unmount")
        #expect(appenders.allSatisfy { $0.state.withLock { $0.failure } == 0 })
        #expect(volume.awaitDaemonExit(), "the daemon did not exit after the unmount: \(volume.mountLog)")
        try volume.mount()
        try expectAcknowledgedRecords(volume, appenders)
    }
}
