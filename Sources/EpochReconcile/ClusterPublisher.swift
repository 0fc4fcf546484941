import EpochFormat
import Foundation
import Logging
import Synchronization

/// Publishes a member's report under the cluster prefix (`KEY/members/MEMBER`, beside the
/// epoch key) on a lease, so that a member that dies disappears once its lease runs out;
/// reads every live member's report back for `epochfs reconcile status`.
public final class ClusterPublisher: Sendable {
    public let client: EtcdClient
    public let epochKey: String
    public let member: String
    public let leaseTTL: Int
    private let lease = Mutex<Int64?>(nil)
    private let lastReport = Mutex<MemberReport?>(nil)
    private let logger = Logger(label: "epochfs.reconcile.cluster")

    public init(client: EtcdClient, epochKey: String, member: String, leaseTTL: Int) {
        self.client = client
        self.epochKey = epochKey
        self.member = member
        self.leaseTTL = leaseTTL
    }

    public static func prefix(epochKey: String) -> String { epochKey + "/members/" }

    /// Puts `report` on the lease (granting one when there is none); a failure is logged and
    /// the report is put again by the next keep-alive round.
    public func publish(_ report: MemberReport) async {
        lastReport.withLock { $0 = report }
        do {
            try await put(report)
        } catch {
            logger.warning("cannot publish to etcd: \(error)")
        }
    }

    private func put(_ report: MemberReport) async throws {
        let id: Int64
        if let current = lease.withLock({ $0 }) {
            id = current
        } else {
            id = try await client.grantLease(ttl: leaseTTL)
            lease.withLock { $0 = id }
        }
        do {
            try await client.put(Self.prefix(epochKey: epochKey) + member, try jsonBytes(report), lease: id)
        } catch {
            // The lease may be gone (expired while etcd was away): grant a new one next time.
            lease.withLock { $0 = nil }
            throw error
        }
    }

    /// Renews the lease every third of its TTL until cancelled; when it expired (etcd was
    /// away longer than the TTL) or a put failed, puts the last report again on a new one.
    public func keepAlive() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(max(0.2, Double(leaseTTL) / 3)))
            guard let report = lastReport.withLock({ $0 }) else { continue }
            do {
                if let id = lease.withLock({ $0 }), try await client.keepAlive(lease: id) { continue }
                lease.withLock { $0 = nil }
                try await put(report)
                logger.info("published again on a new lease")
            } catch {
                logger.warning("lease keep-alive: \(error)")
            }
        }
    }

    /// Every live member's report and the committed epoch.
    public static func clusterReport(client: EtcdClient, epochKey: String) async throws -> ClusterReport {
        let (value, _) = try await client.get(epochKey)
        let target = value.flatMap { Epoch(parsing: String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) }
        let decoder = JSONDecoder()
        let members = try await client.list(prefix: prefix(epochKey: epochKey)).map { pair in
            try decoder.decode(MemberReport.self, from: Data(pair.value))
        }
        return ClusterReport(target: target, members: members)
    }
}
