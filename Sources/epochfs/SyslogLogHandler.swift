import Glibc
import Logging

/// Log lines of a daemonized mount, whose stderr is /dev/null, through syslog(3): journald or
/// rsyslog take them from /dev/log. No swift-log backend for syslog or the journal is among the
/// packages this build may use, and syslog(3) from libc needs none.
struct SyslogLogHandler: LogHandler {
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .warning
    private let label: String

    /// Opens the log connection (once per process, before the daemon forks; the socket is
    /// inherited) as `epochfs[PID]`, facility daemon.
    init(label: String) {
        self.label = label
        Self.opened
    }

    /// No identity given: glibc uses the program's name, `epochfs`.
    private static let opened: Void = { openlog(nil, LOG_PID | LOG_NDELAY, LOG_DAEMON) }()

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let fields = metadata.merging(event.metadata ?? [:]) { $1 }.sorted { $0.key < $1.key }
        let line = "\(label): \(event.message)" + fields.map { " \($0.key)=\($0.value)" }.joined()
        line.withCString { text in
            withVaList([text]) { vsyslog(Self.priority(event.level), "%s", $0) }
        }
    }

    private static func priority(_ level: Logger.Level) -> Int32 {
        switch level {
        case .trace, .debug: LOG_DEBUG
        case .info: LOG_INFO
        case .notice: LOG_NOTICE
        case .warning: LOG_WARNING
        case .error: LOG_ERR
        case .critical: LOG_CRIT
        }
    }
}
