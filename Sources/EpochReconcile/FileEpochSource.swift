import EpochFormat
import EpochSystem
import EpochVolume
import Foundation
import Synchronization

/// `file:PATH`: the epoch is the file's content. inotify on the file's directory (so that a
/// file replaced by rename, or created later, is seen) says when to read it again; a re-read
/// every `poll` seconds is the safety net for what inotify does not report (a file system
/// that gives no events, an overflowed queue).
public struct FileEpochSource: EpochSource {
    public let path: String
    public let poll: Double

    public var spec: String { "file:\(path)" }

    public func read() async throws -> Epoch {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EpochSourceError.unavailable(spec: spec, reason: "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        return try EpochSourceSpec.parseEpoch(String(decoding: data.prefix(64), as: UTF8.self), from: spec)
    }

    public func watch(_ changed: @escaping @Sendable () -> Void) -> WatchHandle {
        let stopped = StopFlag()
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        let thread = Thread {
            let notifier = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
            defer { if notifier >= 0 { close(notifier) } }
            let events = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_ATTRIB)
            if notifier >= 0 { _ = inotify_add_watch(notifier, directory.isEmpty ? "." : directory, events) }
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            var nextPoll = Subprocess.monotonicSeconds() + poll
            while !stopped.isSet {
                // Wake at least once a second to notice stop().
                let timeout = max(0, min(1, nextPoll - Subprocess.monotonicSeconds()))
                var descriptor = pollfd(fd: notifier, events: Int16(POLLIN), revents: 0)
                var ready: Int32 = 0
                if notifier >= 0 {
                    ready = Glibc.poll(&descriptor, 1, Int32(timeout * 1000))
                } else {
                    usleep(UInt32(timeout * 1_000_000))
                }
                if ready > 0 {
                    let count = buffer.withUnsafeMutableBytes { Glibc.read(notifier, $0.baseAddress, $0.count) }
                    if count > 0, Self.names(in: buffer[..<count]).contains(where: { $0 == name || $0.isEmpty }) { changed() }
                }
                if Subprocess.monotonicSeconds() >= nextPoll {
                    nextPoll = Subprocess.monotonicSeconds() + poll
                    changed()
                }
            }
        }
        thread.start()
        return WatchHandle { stopped.set() }
    }

    /// The names in a buffer of inotify events; an overflow event (no name) gives "".
    static func names(in events: ArraySlice<UInt8>) -> [String] {
        var names: [String] = []
        var offset = events.startIndex
        let headerSize = MemoryLayout<inotify_event>.size
        while offset + headerSize <= events.endIndex {
            let length = events[offset + 12..<offset + 16].withUnsafeBytes { Int($0.loadUnaligned(as: UInt32.self)) }
            let nameBytes = events[(offset + headerSize)..<min(events.endIndex, offset + headerSize + length)]
            names.append(String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self))
            offset += headerSize + length
        }
        return names
    }
}

/// A flag one thread sets and another polls.
final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .acquiring) }
    func set() { flag.store(true, ordering: .releasing) }
}
