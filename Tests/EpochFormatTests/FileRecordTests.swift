import EpochCrypto
import EpochFormat
import Support
import Testing

/// The file record of docs/FORMAT.md §6.2, against the known answer of §10.15.
@Suite struct FileRecordTests {
    static let volumeID = try! VolumeID(hex("0f1e2d3c4b5a69788796a5b4c3d2e1f0"))
    static let fileID = try! FileID(hex("00112233445566778899aabbccddeeff"))
    static let nameKey = SecretBytes(count: 64) { $0.copyBytes(from: Array(UInt8(0)..<64)) }
    static let copyNonce = hex("a0a1a2a3a4a5a6a7a8a9aaab"), otherNonce = hex("c0c1c2c3c4c5c6c7c8c9cacb")
    static let olderNonce = hex("d0d1d2d3d4d5d6d7d8d9dadb")

    static var record: FileRecord {
        FileRecord(fileID: fileID, sequence: 2, committedSize: 10_000, denseBlocks: 3,
                   slots: [.inSlot(block: 2, copyNonce: copyNonce, supersedes: otherNonce), .inPlace(block: 0, nonce: otherNonce, olderCopy: olderNonce)])
    }

    @Test func knownAnswer() throws {
        let key = try FileRecord.key(nameKey: Self.nameKey, volumeID: Self.volumeID)
        let bytes = try Self.record.encoded(key: key, nonce: hex("b0b1b2b3b4b5b6b7b8b9babb"))
        #expect(bytes.count == 512)
        #expect(Array(bytes[0..<124]) == hex("0003000000112233445566778899aabbccddeeff000000000000000200000000"
            + "00002710000000000000000301000000000000000000000000000002a0a1a2a3"
            + "a4a5a6a7a8a9aaabc0c1c2c3c4c5c6c7c8c9cacb020000000000000000000000"
            + "00000000c0c1c2c3c4c5c6c7c8c9cacbd0d1d2d3d4d5d6d7d8d9dadb"))
        #expect(Array(bytes[496...]) == hex("7fbf2d40ee6d234d46915b0d48c8a4b2"))
        #expect(SHA256.hash(bytes) == hex("3baac25296bb6339f45fb4a551b4c5b098527691a0e047385454f8058348feea"))
        #expect(try FileRecord.decode(bytes, key: key) == Self.record)
    }

    /// Every byte matters: a change anywhere fails, as does another volume's key; zeros are
    /// "never written".
    @Test func everyChangedByteFails() throws {
        let key = try FileRecord.key(nameKey: Self.nameKey, volumeID: Self.volumeID)
        let bytes = try Self.record.encoded(key: key)
        for index in stride(from: 0, to: 512, by: 7) {
            var changed = bytes
            changed[index] ^= 0x01
            #expect(throws: RecordError(.file, .authenticationFailed)) { try FileRecord.decode(changed, key: key) }
        }
        let other = try FileRecord.key(nameKey: Self.nameKey, volumeID: try VolumeID.random())
        #expect(throws: RecordError(.file, .authenticationFailed)) { try FileRecord.decode(bytes, key: other) }
        #expect(try FileRecord.decode([UInt8](repeating: 0, count: 512), key: key) == nil)
        #expect(throws: RecordError(.file, .wrongSize(511))) { try FileRecord.decode(Array(bytes.prefix(511)), key: key) }
    }
}
