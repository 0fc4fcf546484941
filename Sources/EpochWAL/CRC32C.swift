import CCRC32C

/// A running CRC-32C (Castagnoli) as etcd's WAL keeps it: Go's `crc32.Update` semantics, so
/// `value` starts at 0 (or a seed taken from a crc record) and updating over `a` then `b`
/// gives the plain CRC-32C of `a ‖ b`. Hardware (SSE4.2) when the CPU has it.
public struct CRC32C: Sendable, Equatable {
    public private(set) var value: UInt32

    public init(seed: UInt32 = 0) { value = seed }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        value = epochfs_crc32c_update(value, bytes.baseAddress, bytes.count)
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The plain CRC-32C of `bytes`.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc = CRC32C()
        crc.update(bytes)
        return crc.value
    }

    /// Whether the SSE4.2 instruction is in use (`wal verify` reports it).
    public static var usesHardware: Bool { epochfs_crc32c_hardware() != 0 }
}
