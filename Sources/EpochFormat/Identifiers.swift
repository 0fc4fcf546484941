import EpochCrypto

/// A 16-byte random identifier: a volume id or a file id.
public protocol RandomIdentifier: Hashable, Sendable, CustomStringConvertible {
    var bytes: [UInt8] { get }
    init(validated bytes: [UInt8])
}

extension RandomIdentifier {
    public static var byteCount: Int { 16 }

    public init<Bytes: Collection<UInt8>>(_ bytes: Bytes) throws(FormatError) {
        guard bytes.count == Self.byteCount else {
            throw FormatError.invalid(what: "\(Self.self)", reason: "must be \(Self.byteCount) bytes, got \(bytes.count)")
        }
        self.init(validated: Array(bytes))
    }

    public static func random() throws -> Self { Self(validated: try SecureRandom.bytes(byteCount)) }

    public var description: String { bytes.hexString }
}

public struct VolumeID: RandomIdentifier {
    public let bytes: [UInt8]
    public init(validated bytes: [UInt8]) { self.bytes = bytes }
}

public struct FileID: RandomIdentifier {
    public let bytes: [UInt8]
    public init(validated bytes: [UInt8]) { self.bytes = bytes }
}
