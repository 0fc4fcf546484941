import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization

// Why async-http-client on etcd's JSON gateway rather than grpc-swift 2:
// - Build: it needs swift-nio, nio-http2 and nio-ssl, which gRPC needs too; gRPC adds
//   grpc-swift, its NIO transport, grpc-swift-protobuf and swift-protobuf, plus generated
//   code for etcd's rpc.proto and its imports (gogoproto, googleapis annotations) to keep in
//   step. One dependency tree fewer and no generated code keeps CI's first build minutes
//   shorter.
// - etcd restarts: neither keeps a watch alive across a restart (gRPC reconnects its channel,
//   but the watch stream still ends), so both need the same code: reconnect, watch again from
//   the last revision seen + 1, and re-read the key. Over HTTP/1.1 that is one request per
//   attempt with nothing hidden in a channel's state.
// - Debian's etcd 3.4.23 serves /v3/kv/range, /v3/kv/put, /v3/watch (a streamed reply, one
//   JSON object per line), /v3/lease/grant and /v3/lease/keepalive on its client port
//   (go.etcd.io/etcd/etcdserver/etcdserverpb/gw/rpc.pb.gw.go), so nothing is missing.

/// ENDPOINTS/KEY of an `etcd:` spec: endpoints `host:port` or `http://host:port`, comma
/// separated; KEY is everything after the first `/` that follows them (so `//k` is `/k`).
public enum EtcdEndpoints {
    public static func parse(_ text: String) throws -> (endpoints: [String], key: String) {
        var rest = Substring(text)
        var cursor = rest.startIndex
        var separator: String.Index?
        while cursor < rest.endIndex {
            if rest[cursor...].hasPrefix("://") {
                cursor = rest.index(cursor, offsetBy: 3)
                continue
            }
            if rest[cursor] == "/" { separator = cursor; break }
            cursor = rest.index(after: cursor)
        }
        guard let separator, rest.index(after: separator) < rest.endIndex else {
            throw EpochSourceError.badSpec("etcd:" + text)
        }
        let key = String(rest[rest.index(after: separator)...])
        rest = rest[..<separator]
        let endpoints = try rest.split(separator: ",").map { endpoint -> String in
            if endpoint.hasPrefix("http://") { return String(endpoint) }
            guard !endpoint.contains("://") else { throw EpochSourceError.badSpec("etcd:" + text) }
            return "http://" + endpoint
        }
        guard !endpoints.isEmpty else { throw EpochSourceError.badSpec("etcd:" + text) }
        return (endpoints, key)
    }
}

/// A key and value as etcd stores them, with the revision that last changed it.
public struct EtcdKeyValue: Sendable {
    public let key: String
    public let value: [UInt8]
    public let modRevision: Int64
}

/// What a watch delivers, line by line.
public enum EtcdWatchEvent: Sendable {
    /// The watch is in place; events from here on will come.
    case created(revision: Int64)
    /// Changes to the key, up to `revision`.
    case changed(revision: Int64)
    /// The revision asked for is compacted away: read the key again.
    case compacted(revision: Int64)
}

/// etcd's v3 API through its JSON gateway. Every call tries the endpoints in turn, starting
/// with the one that answered last, so a cluster that loses a member keeps answering.
public final class EtcdClient: Sendable {
    public let endpoints: [String]
    private let http: HTTPClient
    private let preferred = Mutex<Int>(0)
    static let callTimeout = TimeAmount.seconds(5)

    public init(endpoints: [String]) {
        self.endpoints = endpoints
        // No read timeout: a watch's reply is idle for as long as nothing changes.
        http = HTTPClient(eventLoopGroupProvider: .singleton,
                          configuration: .init(timeout: .init(connect: .seconds(2))))
    }

    deinit { try? http.syncShutdown() }

    /// The key's value (nil when absent) and the store's revision at the read.
    public func get(_ key: String) async throws -> (value: [UInt8]?, revision: Int64) {
        let reply = try await call("/v3/kv/range", ["key": Self.base64(key)])
        let kvs = try Self.keyValues(reply)
        return (kvs.first?.value, Self.int64(Self.object(reply["header"])["revision"]))
    }

    /// Every key with `prefix`.
    public func list(prefix: String) async throws -> [EtcdKeyValue] {
        let reply = try await call("/v3/kv/range", ["key": Self.base64(prefix), "range_end": Data(Self.prefixEnd(prefix)).base64EncodedString()])
        return try Self.keyValues(reply)
    }

    public func put(_ key: String, _ value: [UInt8], lease: Int64? = nil) async throws {
        var body: [String: Any] = ["key": Self.base64(key), "value": Data(value).base64EncodedString()]
        if let lease { body["lease"] = String(lease) }
        _ = try await call("/v3/kv/put", body)
    }

    /// A new lease of `ttl` seconds; its id.
    public func grantLease(ttl: Int) async throws -> Int64 {
        let reply = try await call("/v3/lease/grant", ["TTL": String(ttl)])
        let id = Self.int64(reply["ID"])
        guard id != 0 else { throw EtcdError.reply(path: "/v3/lease/grant", detail: "no lease id") }
        return id
    }

    /// Renews a lease; false when etcd no longer has it (it expired).
    public func keepAlive(lease: Int64) async throws -> Bool {
        let reply = try await call("/v3/lease/keepalive", ["ID": String(lease)])
        return Self.int64(Self.object(reply["result"])["TTL"]) > 0
    }

    /// Watches `key` from `startRevision` (nil: from now) on one endpoint. The sequence ends
    /// or throws when the connection does (etcd stopped, say); the caller watches again.
    public func watch(_ key: String, from startRevision: Int64?, endpoint: Int) async throws
        -> AsyncThrowingStream<EtcdWatchEvent, any Error> {
        var create: [String: Any] = ["key": Self.base64(key)]
        if let startRevision { create["start_revision"] = String(startRevision) }
        let base = endpoints[endpoint % endpoints.count]
        let response = try await http.execute(try Self.request(base + "/v3/watch", ["create_request": create]),
                                              timeout: Self.callTimeout)
        guard response.status == .ok else {
            throw EtcdError.reply(path: "/v3/watch", detail: "HTTP \(response.status.code)")
        }
        return AsyncThrowingStream { continuation in
            let reader = Task {
                do {
                    var pending: [UInt8] = []
                    for try await chunk in response.body {
                        pending += chunk.readableBytesView
                        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                            let line = Array(pending[..<newline])
                            pending.removeFirst(newline + 1)
                            if let event = try Self.watchEvent(line) { continuation.yield(event) }
                        }
                    }
                    continuation.finish(throwing: EtcdError.reply(path: "/v3/watch", detail: "the watch ended"))
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in reader.cancel() }
        }
    }

    private static func watchEvent(_ line: [UInt8]) throws -> EtcdWatchEvent? {
        guard let message = try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else { return nil }
        if let error = message["error"] {
            throw EtcdError.reply(path: "/v3/watch", detail: "\(error)")
        }
        let result = object(message["result"])
        let revision = int64(object(result["header"])["revision"])
        let compacted = int64(result["compact_revision"])
        if compacted > 0 { return .compacted(revision: compacted) }
        if result["canceled"] as? Bool == true {
            throw EtcdError.reply(path: "/v3/watch", detail: "canceled: \(result["cancel_reason"] ?? "")")
        }
        if result["created"] as? Bool == true { return .created(revision: revision) }
        // A progress notification has no events and changes nothing.
        let events = result["events"] as? [[String: Any]] ?? []
        guard let latest = events.map({ int64(object($0["kv"])["mod_revision"]) }).max() else { return nil }
        return .changed(revision: latest)
    }

    /// One unary call: POST of a JSON body, a JSON reply; each endpoint in turn until one answers.
    private func call(_ path: String, _ body: [String: Any]) async throws -> [String: Any] {
        let first = preferred.withLock { $0 }
        var lastError: any Error = EtcdError.reply(path: path, detail: "no endpoints")
        for attempt in 0..<endpoints.count {
            let index = (first + attempt) % endpoints.count
            do {
                let response = try await http.execute(try Self.request(endpoints[index] + path, body), timeout: Self.callTimeout)
                let bytes = try await response.body.collect(upTo: 16 << 20)
                let reply = (try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView))) as? [String: Any] ?? [:]
                guard response.status == .ok else {
                    throw EtcdError.reply(path: path, detail: "HTTP \(response.status.code) \(reply["error"] ?? reply["message"] ?? "")")
                }
                preferred.withLock { $0 = index }
                return reply
            } catch {
                lastError = EtcdError.unreachable(endpoint: endpoints[index], detail: "\(error)")
            }
        }
        throw lastError
    }

    private static func request(_ url: String, _ body: [String: Any]) throws -> HTTPClientRequest {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        return request
    }

    private static func keyValues(_ reply: [String: Any]) throws -> [EtcdKeyValue] {
        (reply["kvs"] as? [[String: Any]] ?? []).map { pair in
            EtcdKeyValue(key: String(decoding: decode(pair["key"]), as: UTF8.self), value: decode(pair["value"]),
                         modRevision: int64(pair["mod_revision"]))
        }
    }

    private static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    private static func decode(_ field: Any?) -> [UInt8] {
        (field as? String).flatMap { Data(base64Encoded: $0) }.map { Array($0) } ?? []
    }

    /// The gateway writes int64 fields as strings, and leaves out fields that are zero.
    private static func int64(_ field: Any?) -> Int64 {
        if let text = field as? String { return Int64(text) ?? 0 }
        return (field as? NSNumber)?.int64Value ?? 0
    }

    private static func object(_ field: Any?) -> [String: Any] { field as? [String: Any] ?? [:] }

    /// The first key after every key with `prefix` (etcd's range_end for a prefix).
    private static func prefixEnd(_ prefix: String) -> [UInt8] {
        var bytes = Array(prefix.utf8)
        while let last = bytes.last, last == 0xff { bytes.removeLast() }
        guard !bytes.isEmpty else { return [0] }
        bytes[bytes.count - 1] += 1
        return bytes
    }
}

public enum EtcdError: Error, CustomStringConvertible {
    case unreachable(endpoint: String, detail: String)
    case reply(path: String, detail: String)

    public var description: String {
        switch self {
        case let .unreachable(endpoint, detail): "etcd \(endpoint): \(detail)"
        case let .reply(path, detail): "etcd \(path): \(detail)"
        }
    }
}
