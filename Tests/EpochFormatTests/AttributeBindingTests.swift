import EpochFormat
import Support
import Testing

/// The rules of an attribute binding (docs/FORMAT.md §5.5), without I/O.
@Suite struct AttributeBindingTests {
    let before = AttributeBinding.digest(of: [("user.epochfs.a", [1, 2, 3])])
    let after = AttributeBinding.digest(of: [("user.epochfs.a", [1, 2, 3]), ("user.epochfs.b", [4])])
    let other = AttributeBinding.digest(of: [("user.epochfs.a", [1, 2, 4])])

    @Test func theDigestIsOfTheSetNotItsOrder() {
        #expect(AttributeBinding.digest(of: [("user.epochfs.b", [4]), ("user.epochfs.a", [1, 2, 3])]) == after)
        #expect(before != other && before != after)
        // Name and value lengths are in the digest: no two sets share their bytes.
        #expect(AttributeBinding.digest(of: [("user.epochfs.ab", [])]) != AttributeBinding.digest(of: [("user.epochfs.a", Array("b".utf8))]))
    }

    @Test func unboundAcceptsAnySet() {
        #expect(!AttributeBinding.unbound.isBound)
        #expect(AttributeBinding.unbound.accepts(other))
    }

    /// A change under way accepts the set before it and the set after it, and nothing else;
    /// the commit after it accepts only what it found.
    @Test func aChangeAcceptsBothSidesUntilItsCommit() {
        let changing = AttributeBinding(committed: before).changing(from: before, to: after)
        #expect(changing.accepts(before) && changing.accepts(after) && !changing.accepts(other))
        let committed = changing.committing(after)
        #expect(committed.accepts(after) && !committed.accepts(before) && committed.pending == AttributeBinding.noDigest)
        // A commit that read the set before the change landed keeps the change pending.
        let early = changing.committing(before)
        #expect(early.accepts(before) && early.accepts(after) && !early.accepts(other))
        // A change that leaves the set as it was names nothing pending.
        #expect(AttributeBinding(committed: before).changing(from: before, to: before).pending == AttributeBinding.noDigest)
    }

    /// The file record carries the binding in bytes 124…155 and authenticates it.
    @Test func theFileRecordCarriesIt() throws {
        let key = try FileRecord.key(nameKey: DirectoryRecordTests.nameKey, volumeID: DirectoryRecordTests.volumeID)
        let record = FileRecord(fileID: try FileID.random(), attributes: AttributeBinding(committed: before).changing(from: before, to: after))
        var bytes = try record.encoded(key: key)
        #expect(Array(bytes[124..<140]) == before && Array(bytes[140..<156]) == after)
        #expect(try FileRecord.decode(bytes, key: key) == record)
        bytes[130] ^= 1
        #expect(throws: RecordError(.file, .authenticationFailed)) { try FileRecord.decode(bytes, key: key) }
    }
}
