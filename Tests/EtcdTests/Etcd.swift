import Support
import Foundation
import Glibc
import Testing

let etcdTools = [(path: "/usr/bin/etcd", package: "etcd-server"), (path: "/usr/bin/etcdctl", package: "etcd-client")]

/// One etcd 3.4 member (Debian's /usr/bin/etcd) on loopback ports.
final class EtcdMember {
    struct Endpoint {
        let name: String
        let clientPort = freeLoopbackPort()
        let peerPort = freeLoopbackPort()
        var clientURL: String { "http://127.0.0.1:\(clientPort)" }
        var peerURL: String { "http://127.0.0.1:\(peerPort)" }
    }

    let endpoint: Endpoint
    let cluster: [Endpoint]
    let dataDirectory: String
    let walDirectory: String?
    let logDirectory: TemporaryDirectory
    private(set) var process: ChildProcess?
    private var starts = 0

    /// `cluster` lists every member (default: this one alone); `walDirectory` nil keeps the
    /// WAL in DATA/member/wal.
    init(_ endpoint: Endpoint, cluster: [Endpoint]? = nil, dataDirectory: String, walDirectory: String? = nil,
         logDirectory: TemporaryDirectory) {
        self.endpoint = endpoint
        self.cluster = cluster ?? [endpoint]
        self.dataDirectory = dataDirectory
        self.walDirectory = walDirectory
        self.logDirectory = logDirectory
    }

    deinit { process?.kill9() }

    /// The WAL as etcd keeps it.
    var walPath: String { walDirectory ?? dataDirectory + "/member/wal" }

    var client: EtcdClient { EtcdClient(port: endpoint.clientPort) }

    /// Starts etcd (a new cluster the first time, the existing member after) without waiting.
    func start() throws {
        precondition(process == nil || !process!.isRunning, "etcd \(endpoint.name) is running")
        starts += 1
        var arguments = ["/usr/bin/etcd", "--name", endpoint.name, "--data-dir", dataDirectory,
                         "--listen-client-urls", endpoint.clientURL, "--advertise-client-urls", endpoint.clientURL,
                         "--listen-peer-urls", endpoint.peerURL, "--initial-advertise-peer-urls", endpoint.peerURL,
                         "--initial-cluster", cluster.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ","),
                         "--initial-cluster-token", "epochfs-test", "--initial-cluster-state", "new",
                         "--logger", "zap", "--log-outputs", "stderr"]
        if let walDirectory { arguments += ["--wal-dir", walDirectory] }
        process = try ChildProcess(arguments, stdoutPath: logDirectory.file("\(endpoint.name)-\(starts).out"),
                                   stderrPath: logDirectory.file("\(endpoint.name)-\(starts).log"))
    }

    /// Waits until the member answers /health with true.
    func waitHealthy(seconds: Double = 60) throws {
        let healthy = waitUntil(seconds: seconds) {
            guard process?.isRunning == true else { return true }
            return (try? client.health()) == true
        }
        guard healthy, process?.isRunning == true else {
            throw TestFailure("etcd \(endpoint.name) not healthy within \(seconds) s; log tail:\n\(logTail)")
        }
    }

    /// SIGTERM: etcd shuts down cleanly and re-raises it (exit 128 + 15).
    @discardableResult
    func stop() -> Int32 { process?.stop() ?? -1 }

    @discardableResult
    func kill9() -> Int32 { process?.kill9() ?? -1 }

    var logTail: String { String((process?.stderr ?? "").suffix(3000)) }
}

/// etcd's v3 HTTP/JSON gateway over one keep-alive connection (keys and values in base64).
final class EtcdClient {
    let port: UInt16
    private var socketDescriptor: Int32 = -1
    /// Bytes received and not yet consumed by a reply.
    private var pending = Data()

    init(port: UInt16) { self.port = port }

    deinit { disconnect() }

    func health() throws -> Bool {
        let body = try request("GET", "/health", body: nil)
        return (try JSONSerialization.jsonObject(with: body) as? [String: Any])?["health"] as? String == "true"
    }

    func put(_ key: String, _ value: String) throws {
        _ = try request("POST", "/v3/kv/put", body: ["key": base64(key), "value": base64(value)])
    }

    /// Every key and value with `prefix`. `serializable` reads this member's own state, without
    /// asking the leader (what a member that is catching up has applied).
    func range(prefix: String, serializable: Bool = false) throws -> [String: String] {
        var end = Array(prefix.utf8)
        end[end.count - 1] += 1
        let body = try request("POST", "/v3/kv/range", body: [
            "key": base64(prefix), "range_end": Data(end).base64EncodedString(), "serializable": serializable,
        ])
        let reply = try JSONSerialization.jsonObject(with: body) as? [String: Any] ?? [:]
        var pairs: [String: String] = [:]
        for pair in reply["kvs"] as? [[String: Any]] ?? [] {
            guard let key = (pair["key"] as? String).flatMap({ Data(base64Encoded: $0) }) else { continue }
            let value = (pair["value"] as? String).flatMap { Data(base64Encoded: $0) } ?? Data()
            pairs[String(decoding: key, as: UTF8.self)] = String(decoding: value, as: UTF8.self)
        }
        return pairs
    }

    private func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    /// One HTTP/1.1 exchange; the reply must be 200 with a Content-Length. Any failure drops the
    /// connection, so the next request starts clean.
    private func request(_ method: String, _ path: String, body: [String: Any]?) throws -> Data {
        do {
            if socketDescriptor < 0 { try connect() }
            let payload = try body.map { try JSONSerialization.data(withJSONObject: $0) } ?? Data()
            var message = Data("\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nContent-Type: application/json\r\n".utf8)
            message += Data("Content-Length: \(payload.count)\r\n\r\n".utf8) + payload
            try send(message)
            return try receiveReply()
        } catch {
            disconnect()
            throw error
        }
    }

    private func connect() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = port.bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let code = errno
            close(descriptor)
            throw TestFailure("connect 127.0.0.1:\(port): \(String(cString: strerror(code)))")
        }
        socketDescriptor = descriptor
    }

    private func disconnect() {
        if socketDescriptor >= 0 { close(socketDescriptor) }
        socketDescriptor = -1
    }

    private func send(_ message: Data) throws {
        var sent = 0
        while sent < message.count {
            let result = message.withUnsafeBytes { Glibc.send(socketDescriptor, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            guard result > 0 else { throw TestFailure("send to 127.0.0.1:\(port): \(String(cString: strerror(errno)))") }
            sent += result
        }
    }

    /// Reads one reply: the head, then a body of Content-Length bytes or in chunks.
    private func receiveReply() throws -> Data {
        let head = try receiveLine(through: "\r\n\r\n")
        let lines = head.split(separator: "\r\n")
        let statusLine = lines.first.map(String.init) ?? ""
        let fields = Dictionary(lines.dropFirst().map { line -> (String, String) in
            let parts = line.split(separator: ":", maxSplits: 1)
            return (parts[0].lowercased(), parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : "")
        }, uniquingKeysWith: { $1 })
        var body = Data()
        if fields["transfer-encoding"] == "chunked" {
            while true {
                let sizeLine = try receiveLine(through: "\r\n")
                guard let size = Int(sizeLine.split(separator: ";")[0], radix: 16) else {
                    throw TestFailure("bad chunk size '\(sizeLine)' from 127.0.0.1:\(port)")
                }
                if size == 0 { break }
                body += try receiveBytes(size)
                _ = try receiveLine(through: "\r\n")
            }
            while try !receiveLine(through: "\r\n").isEmpty {} // trailers
        } else if let length = fields["content-length"].flatMap({ Int($0) }) {
            body = try receiveBytes(length)
        } else {
            throw TestFailure("HTTP reply with neither Content-Length nor chunks from 127.0.0.1:\(port): \(head)")
        }
        guard statusLine.split(separator: " ").dropFirst().first == "200" else {
            throw TestFailure("\(statusLine): \(String(decoding: body, as: UTF8.self))")
        }
        return body
    }

    /// The text up to `terminator`, which is consumed and not returned.
    private func receiveLine(through terminator: String) throws -> String {
        let separator = Data(terminator.utf8)
        while pending.range(of: separator) == nil { try receiveMore() }
        let end = pending.range(of: separator)!
        let line = String(decoding: pending[pending.startIndex..<end.lowerBound], as: UTF8.self)
        pending = Data(pending[end.upperBound...])
        return line
    }

    private func receiveBytes(_ count: Int) throws -> Data {
        while pending.count < count { try receiveMore() }
        let bytes = Data(pending.prefix(count))
        pending = Data(pending.dropFirst(count))
        return bytes
    }

    private func receiveMore() throws {
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        let count = chunk.withUnsafeMutableBytes { recv(socketDescriptor, $0.baseAddress!, $0.count, 0) }
        guard count > 0 else {
            pending.removeAll()
            throw TestFailure("connection to 127.0.0.1:\(port) closed: \(count < 0 ? String(cString: strerror(errno)) : "EOF")")
        }
        pending.append(contentsOf: chunk[0..<count])
    }
}

/// Puts `prefix-NNNNN` keys from a background thread until told to stop or a put fails, and
/// records which puts etcd acknowledged. With `retrySeconds`, a failed put is retried (as a
/// client does across a leader election) until it succeeds or that long has passed.
final class WriteLoad: @unchecked Sendable {
    let prefix: String
    private let port: UInt16
    private let lock = NSLock()
    private var acknowledged: [String: String] = [:]
    private var stopRequested = false
    private var failure: String?
    private let finished = DispatchSemaphore(value: 0)

    /// `padding` more bytes in every value make a load that grows etcd's database quickly.
    init(port: UInt16, prefix: String, limit: Int, retrySeconds: Double = 0, padding: Int = 0) {
        self.port = port
        self.prefix = prefix
        Thread { [self] in
            let client = EtcdClient(port: port)
            for number in 0..<limit where !lock.withLock({ stopRequested }) {
                let key = WriteLoad.key(prefix, number)
                let value = "value-\(number)-" + String(repeating: "v", count: number % 64 + padding)
                let deadline = monotonicSeconds() + retrySeconds
                var lastError: (any Error)?
                repeat {
                    do {
                        try client.put(key, value)
                        lastError = nil
                    } catch {
                        lastError = error
                        usleep(100_000)
                    }
                } while lastError != nil && monotonicSeconds() < deadline
                if let lastError {
                    lock.withLock { failure = "\(key): \(lastError)" }
                    break
                }
                lock.withLock { acknowledged[key] = value }
            }
            finished.signal()
        }.start()
    }

    /// `PREFIX-NNNNN`.
    static func key(_ prefix: String, _ number: Int) -> String {
        let digits = String(number)
        return prefix + "-" + String(repeating: "0", count: max(0, 5 - digits.count)) + digits
    }

    var acknowledgedCount: Int { lock.withLock { acknowledged.count } }

    /// Waits for the writer to finish (stopping it first) and returns every acknowledged put.
    func finish(stop: Bool = true, seconds: Double = 60) throws -> [String: String] {
        if stop { lock.withLock { stopRequested = true } }
        guard finished.wait(timeout: .now() + seconds) == .success else {
            throw TestFailure("the \(prefix) writer did not finish within \(seconds) s")
        }
        return lock.withLock { acknowledged }
    }

    var failureMessage: String? { lock.withLock { failure } }
}
