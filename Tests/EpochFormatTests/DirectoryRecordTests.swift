import EpochCrypto
import EpochFormat
import Support
import Testing

/// The directory record of docs/FORMAT.md §5.6, against the known answer of §10.16.
@Suite struct DirectoryRecordTests {
    static let volumeID = try! VolumeID(hex("0f1e2d3c4b5a69788796a5b4c3d2e1f0"))
    static let nameKey = SecretBytes(count: 64) { $0.copyBytes(from: Array(UInt8(0)..<64)) }
    static let iv = Array(UInt8(0xf0)...UInt8(0xff))

    static var record: DirectoryRecord {
        DirectoryRecord(sequence: 5, entries: [
            .init(nameDigest: DirectoryRecord.nameDigest("name-one"), type: 8, objectID: hex("00112233445566778899aabbccddeeff"), sequence: 7),
            .init(nameDigest: DirectoryRecord.nameDigest("name-two"), type: 4, objectID: Array(UInt8(0xe0)...UInt8(0xef))),
        ])
    }

    @Test func knownAnswer() throws {
        let key = try DirectoryRecord.key(nameKey: Self.nameKey, volumeID: Self.volumeID)
        let bytes = try Self.record.encoded(key: key, iv: Self.iv, nonce: hex("b0b1b2b3b4b5b6b7b8b9babb"))
        #expect(bytes.count == DirectoryRecord.minSize + 2 * 41)
        #expect(Array(bytes.prefix(98)) == hex("00040000000000020000000000000005cf97a9ff4da3c751d3d473a5c99ae6da"
            + "0800112233445566778899aabbccddeeff0000000000000007f1cc0c8644fd0a"
            + "33598ca1f9138808dd04e0e1e2e3e4e5e6e7e8e9eaebecedeeef0000000000000000"))
        #expect(Array(bytes.suffix(16)) == hex("51ca2824940ded645a4407e5122fd734"))
        #expect(SHA256.hash(Self.iv + bytes) == hex("8d202a24146ae97c74d9bd608dc348f03362ba42d09259584be92cbb5160f48b"))
        #expect(try DirectoryRecord.decode(bytes[...], key: key, iv: Self.iv) == Self.record)
    }

    /// Format 5 (§10.18): the same entries with the directory's attribute binding, the §10.8
    /// attribute committed and its removal pending; the binding survives a letting go.
    @Test func knownAnswerWithAttributeBinding() throws {
        let value = hex("010000000007a0a1a2a3a4a5a6a7a8a9aaab4f281da84db5f0c307a25e6b6b647c1b3254eaaaef")
        let digest = AttributeBinding.digest(of: [("user.epochfs.FeQ1TwqLhpTYZdhwjba0G_5MXz90MLBd2MZ6mA", value)])
        #expect(digest == hex("0e4dfbd1daf298048de0ec336c7768b9"))
        #expect(AttributeBinding.digest(of: []) == hex("e3b0c44298fc1c149afbf4c8996fb924"))
        var record = Self.record
        record.sequence = 6
        record.attributes = AttributeBinding(committed: digest).changing(from: digest, to: AttributeBinding.digest(of: []))
        let key = try DirectoryRecord.key(nameKey: Self.nameKey, volumeID: Self.volumeID)
        let bytes = try record.encoded(key: key, iv: Self.iv, nonce: hex("b0b1b2b3b4b5b6b7b8b9babb"))
        #expect(Array(bytes.prefix(48)) == hex("000500000000000200000000000000060e4dfbd1daf298048de0ec336c7768b9e3b0c44298fc1c149afbf4c8996fb924"))
        #expect(Array(bytes.suffix(16)) == hex("6b7efbedeb15b2186960bcce4668ef45"))
        #expect(SHA256.hash(Self.iv + bytes) == hex("8e103b44cccb41cefbd44bbe4a838c76c997176aa479cc15936846d221b400de"))
        #expect(try DirectoryRecord.decode(bytes[...], key: key, iv: Self.iv) == record)
        #expect(record.removing([DirectoryRecord.nameDigest("name-one")])?.attributes == record.attributes)
    }

    /// Every byte matters, and so does the directory: another IV (the record moved to another
    /// directory) or another volume's key fails; a cut record is too short.
    @Test func everyChangedByteAndAnotherDirectoryFail() throws {
        let key = try DirectoryRecord.key(nameKey: Self.nameKey, volumeID: Self.volumeID)
        let bytes = try Self.record.encoded(key: key, iv: Self.iv)
        for index in bytes.indices {
            var changed = bytes
            changed[index] ^= 0x01
            #expect(throws: RecordError(.directory, .authenticationFailed)) { try DirectoryRecord.decode(changed[...], key: key, iv: Self.iv) }
        }
        var otherIV = Self.iv
        otherIV[15] ^= 1
        #expect(throws: RecordError(.directory, .authenticationFailed)) { try DirectoryRecord.decode(bytes[...], key: key, iv: otherIV) }
        let other = try DirectoryRecord.key(nameKey: Self.nameKey, volumeID: try VolumeID.random())
        #expect(throws: RecordError(.directory, .authenticationFailed)) { try DirectoryRecord.decode(bytes[...], key: other, iv: Self.iv) }
        #expect(throws: RecordError(.directory, .wrongSize(43))) { try DirectoryRecord.decode(bytes.prefix(43), key: key, iv: Self.iv) }
    }

    /// Entries are found by digest, and letting go of some leaves the others and counts up.
    @Test func lookupAndRemoval() throws {
        let record = Self.record
        let one = DirectoryRecord.nameDigest("name-one"), two = DirectoryRecord.nameDigest("name-two")
        #expect(record.entry(one)?.type == 8)
        #expect(record.entry(DirectoryRecord.nameDigest("name-three")) == nil)
        #expect(record.removing([DirectoryRecord.nameDigest("name-three")]) == nil)
        let next = try #require(record.removing([one]))
        #expect(next.sequence == 6)
        #expect(next.entries.map(\.nameDigest) == [two])
        #expect(record.entry(two)?.bindsObject == true)
    }
}
