/// Why a record (a file's, a directory's or a volume's anchor) could not be decoded.
public struct RecordError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Record: String, Sendable {
        case file = "file record"
        case directory = "directory record"
        case anchor = "anchor record"
    }

    public enum Problem: Equatable, Sendable {
        case wrongSize(Int)
        case authenticationFailed
        case unknownVersion(UInt16)
        case malformed
    }

    public let record: Record
    public let problem: Problem

    public init(_ record: Record, _ problem: Problem) {
        self.record = record
        self.problem = problem
    }

    public var description: String {
        switch problem {
        case let .wrongSize(count): "\(record.rawValue) of \(count) bytes has the wrong size"
        case .authenticationFailed: "\(record.rawValue) does not authenticate"
        case let .unknownVersion(version): "\(record.rawValue) has unknown version \(version)"
        case .malformed: "\(record.rawValue) is malformed"
        }
    }
}
