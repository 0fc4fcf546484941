import EpochCrypto
import EpochFormat
import Support
import Testing

/// The anchor record of docs/FORMAT.md §3.8, against the known answer of §10.17.
@Suite struct AnchorRecordTests {
    static let volumeID = try! VolumeID(hex("0f1e2d3c4b5a69788796a5b4c3d2e1f0"))
    static let nameKey = SecretBytes(count: 64) { $0.copyBytes(from: Array(UInt8(0)..<64)) }

    @Test func knownAnswer() throws {
        let key = try AnchorRecord.key(nameKey: Self.nameKey, volumeID: Self.volumeID)
        let bytes = try AnchorRecord(sequence: 42).encoded(key: key, volumeID: Self.volumeID, nonce: hex("b0b1b2b3b4b5b6b7b8b9babb"))
        #expect(bytes == hex("00010000000000000000002ab0b1b2b3b4b5b6b7b8b9babb97b16a4edf9e653bc28367ff8fd1ba44"))
        #expect(try AnchorRecord.decode(bytes, key: key, volumeID: Self.volumeID) == AnchorRecord(sequence: 42))
    }

    /// Every byte matters, and so does the volume: another volume's id or key fails; a record
    /// of another size is refused as such.
    @Test func everyChangedByteAndAnotherVolumeFail() throws {
        let key = try AnchorRecord.key(nameKey: Self.nameKey, volumeID: Self.volumeID)
        let bytes = try AnchorRecord(sequence: 7).encoded(key: key, volumeID: Self.volumeID)
        for index in bytes.indices {
            var changed = bytes
            changed[index] ^= 0x01
            #expect(throws: RecordError(.anchor, .authenticationFailed)) { try AnchorRecord.decode(changed, key: key, volumeID: Self.volumeID) }
        }
        let otherVolume = try VolumeID(hex("0f1e2d3c4b5a69788796a5b4c3d2e1f1"))
        #expect(throws: RecordError(.anchor, .authenticationFailed)) { try AnchorRecord.decode(bytes, key: key, volumeID: otherVolume) }
        let otherKey = try AnchorRecord.key(nameKey: SecretBytes(count: 64) { $0.copyBytes(from: Array(repeating: 1, count: 64)) },
                                            volumeID: Self.volumeID)
        #expect(throws: RecordError(.anchor, .authenticationFailed)) { try AnchorRecord.decode(bytes, key: otherKey, volumeID: Self.volumeID) }
        #expect(throws: RecordError(.anchor, .wrongSize(39))) { try AnchorRecord.decode(Array(bytes.prefix(39)), key: key, volumeID: Self.volumeID) }
    }
}
