import Glibc
import SystemPackage

/// A failed system call: what was being done, to what, and the errno. Callers match on
/// `errno`; the FUSE frontend replies with it, so a backing ENOSPC reaches the writer as ENOSPC.
public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    public let operation: String
    public let path: String
    public let errno: Int32

    public init(_ operation: String, path: String, errno: Int32 = Glibc.errno) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    public init(_ operation: String, path: String, _ errno: Errno) {
        self.init(operation, path: path, errno: errno.rawValue)
    }

    public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}

/// Retries a system call interrupted by a signal. The one place outside swift-system's own
/// wrappers where EINTR is handled.
@discardableResult
public func retryingEINTR<T: SignedInteger>(_ call: () -> T) -> T {
    while true {
        let result = call()
        if result != -1 || errno != EINTR { return result }
    }
}
