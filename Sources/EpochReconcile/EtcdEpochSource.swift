import EpochFormat
import Foundation
import Logging
import Synchronization

/// `etcd:ENDPOINTS/KEY`: the epoch is KEY's value, read linearizably at every pass. A watch on
/// KEY says when to read it again. When the watch breaks (etcd restarted, a member lost) it is
/// made again on the next endpoint, from the revision after the last one seen, so a change
/// made meanwhile is still delivered; each new watch also starts a pass, which reads the key
/// again, so nothing depends on the resume alone (nor on a compacted revision).
public final class EtcdEpochSource: EpochSource {
    public let client: EtcdClient
    public let key: String
    public let spec: String
    /// The newest revision a read or the watch saw.
    private let seenRevision = Mutex<Int64?>(nil)
    private let logger = Logger(label: "epochfs.reconcile.etcd")

    public init(client: EtcdClient, key: String, spec: String) {
        self.client = client
        self.key = key
        self.spec = spec
    }

    public func read() async throws -> Epoch {
        let value: [UInt8]?
        let revision: Int64
        do {
            (value, revision) = try await client.get(key)
        } catch {
            throw EpochSourceError.unavailable(spec: spec, reason: "\(error)")
        }
        note(revision)
        guard let value else { throw EpochSourceError.unavailable(spec: spec, reason: "key \(key) does not exist") }
        return try EpochSourceSpec.parseEpoch(String(decoding: value, as: UTF8.self), from: spec)
    }

    public func watch(_ changed: @escaping @Sendable () -> Void) -> WatchHandle {
        let task = Task.detached { [self] in
            var endpoint = 0
            var delay = Backoff(base: 0.1, cap: 2)
            while !Task.isCancelled {
                do {
                    let start = seenRevision.withLock { $0.map { $0 + 1 } }
                    for try await event in try await client.watch(key, from: start, endpoint: endpoint) {
                        switch event {
                        case let .created(revision):
                            delay.reset()
                            logger.info("watching \(key) on \(client.endpoints[endpoint % client.endpoints.count]) from revision \(start.map(String.init) ?? "now") (store at \(revision))")
                            changed()
                        case let .changed(revision):
                            note(revision)
                            changed()
                        case let .compacted(revision):
                            logger.warning("revisions up to \(revision) are compacted; reading \(key) again")
                            seenRevision.withLock { $0 = nil }
                            changed()
                        }
                    }
                } catch {
                    if Task.isCancelled { break }
                    logger.warning("watch of \(key) broke: \(error); watching again")
                }
                endpoint += 1
                try? await Task.sleep(for: .seconds(delay.next()))
            }
        }
        return WatchHandle { task.cancel() }
    }

    private func note(_ revision: Int64) {
        seenRevision.withLock { $0 = max($0 ?? 0, revision) }
    }
}
