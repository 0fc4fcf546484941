import Support
import CCRC32C
import Testing
@testable import EpochWAL

@Suite struct CRC32CTests {
    @Test func checkValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([]) == 0)
    }

    /// Go's crc32.Update chaining: update over a then b equals the checksum of a ‖ b, and a
    /// seed taken from a crc record continues the chain.
    @Test func chainingMatchesConcatenation() {
        let first = Array("etcd wal ".utf8)
        let second = [UInt8](repeating: 0x5a, count: 100_000)
        var crc = CRC32C()
        crc.update(first)
        let seed = crc.value
        var resumed = CRC32C(seed: seed)
        resumed.update(second)
        crc.update(second)
        #expect(crc.value == CRC32C.checksum(first + second))
        #expect(resumed.value == crc.value)
    }

    /// The hardware path (three interleaved streams joined by shift tables) against the
    /// table path, for every length around the block sizes and at every alignment.
    @Test func hardwareMatchesTable() {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<(3 * 8192 * 2 + 4096)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let lengths = [0, 1, 7, 8, 9, 255, 256, 767, 768, 769, 1000, 3 * 8192 - 1, 3 * 8192, 3 * 8192 + 1, 3 * 8192 * 2 + 100]
        bytes.withUnsafeBytes { buffer in
            for alignment in 0..<8 {
                for length in lengths {
                    let slice = UnsafeRawBufferPointer(rebasing: buffer[alignment..<alignment + length])
                    let seed: UInt32 = 0x1234_5678
                    #expect(epochfs_crc32c_update(seed, slice.baseAddress, slice.count)
                        == epochfs_crc32c_update_table(seed, slice.baseAddress, slice.count),
                        "length \(length) alignment \(alignment)")
                }
            }
        }
        #expect(epochfs_crc32c_update_table(0, "123456789", 9) == 0xE306_9283)
    }
}
