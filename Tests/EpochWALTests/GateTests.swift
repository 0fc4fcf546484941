import Support
import EpochCrypto
import EpochFormat
import Testing
@testable import EpochWAL

/// The cutover-gated unwrap over segments written by `WALWriter`.
@Suite struct GateTests {
    let cutover: UInt64 = 5
    let raftKeys = TestRaftKeys([7: aesKey(KnownAnswer.raftDEK7), 8: aesKey(String(repeating: "42", count: 32))])

    func gate(_ layout: PayloadLayout = .proposal, cutover: UInt64? = nil) -> CutoverGate {
        CutoverGate(cutover: cutover ?? self.cutover, layout: layout, raftKeys: raftKeys.lookup)
    }

    /// Writes `entries` as one log.
    func writeLog(_ directory: String, _ entries: [RaftEntry]) throws {
        let writer = try WALWriter(directory: directory, metadata: testMetadata, options: .init(segmentSize: 2048, sync: false))
        try writer.save(hardState: HardState(term: 1, vote: 1, commit: entries.last?.index ?? 0), entries: entries)
        try writer.close()
    }

    /// The application's proposals for indices 1...count, before wrapping.
    func plainProposals(_ range: ClosedRange<UInt64>) -> [RaftEntry] {
        range.map { RaftEntry(term: 1, index: $0, data: proposal(requestID: 1000 + $0, Array("put key\($0) value\($0)".utf8))) }
    }

    /// What a proposer with the wrapper stores: entries above the cutover wrapped.
    func stored(_ entries: [RaftEntry], wrapper: RaftPayloadWrapper?) throws -> [RaftEntry] {
        try entries.map { entry in
            var stored = entry
            if entry.index > cutover, entry.type == .normal, !entry.data.isEmpty {
                stored.data = try wrapper.wrap(entry.data)
            }
            return stored
        }
    }

    @Test(arguments: PayloadLayout.allCases)
    func boundaryPassesAndAboveIsUnwrapped(layout: PayloadLayout) throws {
        let directory = TemporaryDirectory()
        let wrapper = try RaftPayloadWrapper(keyID: 7, raftDEK: aesKey(KnownAnswer.raftDEK7), layout: layout)
        var plain = plainProposals(1...12)
        if layout == .raw { plain = plain.map { RaftEntry(term: $0.term, index: $0.index, data: Array($0.data.dropFirst(9))) } }
        // A leader no-op and a conf change above the cutover, stored clear.
        plain[7] = RaftEntry(term: 2, index: 8)
        plain[8] = RaftEntry(type: .confChange, term: 2, index: 9, data: [0x08, 0x01, 0x10, 0x00, 0x18, 0x02])
        plain[9] = RaftEntry(type: .confChangeV2, term: 2, index: 10, data: [0x08, 0x00])
        let entries = try stored(plain, wrapper: wrapper)
        try writeLog(directory.path, entries)

        let (log, result) = readAll(directory.path, gate: gate(layout))
        let summary = try result.get()
        #expect(log.entries == plain)
        #expect(summary.unwrappedEntries == 12 - Int(cutover) - 3)
        // Index == cutover: passed through untouched. Cutover + 1: opened.
        #expect(log.keyIDs[cutover] == nil && entries[4].data == plain[4].data)
        #expect(log.keyIDs[cutover + 1] == 7 && entries[5].data != plain[5].data)
        for index: UInt64 in [8, 9, 10] { #expect(log.keyIDs[index] == nil) }
        #expect(log.requestIDs[6] == (layout == .proposal ? 1006 : nil))
        #expect(raftKeys.lookups == 1, "one key build per key id, not per entry")

        // The inert default gate passes everything through as stored.
        let (inert, inertResult) = readAll(directory.path)
        _ = try inertResult.get()
        #expect(inert.entries == entries)
    }

    /// A log spanning rekeys: runs of entries under key ids 7 and 8, switching back and forth,
    /// each opened with its own key, and each key built once.
    @Test func keyIDsSwitchingWithinOneLog() throws {
        let directory = TemporaryDirectory()
        let wrappers = [try RaftPayloadWrapper(keyID: 7, raftDEK: aesKey(KnownAnswer.raftDEK7)),
                        try RaftPayloadWrapper(keyID: 8, raftDEK: aesKey(String(repeating: "42", count: 32)))]
        let plain = plainProposals(1...20)
        let keyIndex: (UInt64) -> Int = { [6, 7, 8, 12, 13, 17].contains($0) ? 1 : 0 }
        let underEach = try wrappers.map { try stored(plain, wrapper: $0) }
        try writeLog(directory.path, plain.indices.map { underEach[keyIndex(plain[$0].index)][$0] })

        let (log, result) = readAll(directory.path, gate: gate())
        #expect(try result.get().unwrappedEntries == 15)
        #expect(log.entries == plain)
        for index in (cutover + 1)...20 { #expect(log.keyIDs[index] == [7, 8][keyIndex(index)], "index \(index)") }
        #expect(raftKeys.lookups == 2, "one key build per key id, not per switch")
    }

    /// The entry at the cutover is the enable-flag entry and stays clear even when its bytes
    /// look like an envelope; one clear entry above the cutover stops the reader.
    @Test func strictlyGreater() throws {
        let directory = TemporaryDirectory()
        let wrapper = try RaftPayloadWrapper(keyID: 7, raftDEK: aesKey(KnownAnswer.raftDEK7))
        var entries = plainProposals(1...8)
        entries[4].data = try wrapper.wrap(entries[4].data) // index 5 == cutover
        try writeLog(directory.path, entries)
        let (log, result) = readAll(directory.path, gate: gate())
        #expect(log.entries.map(\.index) == [1, 2, 3, 4, 5])
        #expect(log.entries[4].data == entries[4].data)
        guard case let .failure(WALError.unwrapFailed(index, lastDelivered, _, .envelope)) = result else {
            Issue.record("unexpected \(result)")
            return
        }
        #expect(index == 6 && lastDelivered == 5)
    }

    /// Any single byte of the wrapped payload (the envelope: version, flag, key id, nonce,
    /// ciphertext, tag) changed stops the reader at exactly that entry.
    @Test(arguments: PayloadLayout.allCases)
    func tamperingAnyEnvelopeByteStopsAtThatIndex(layout: PayloadLayout) throws {
        let wrapper = try RaftPayloadWrapper(keyID: 7, raftDEK: aesKey(KnownAnswer.raftDEK7), layout: layout)
        var plain = plainProposals(1...8)
        if layout == .raw { plain = plain.map { RaftEntry(term: $0.term, index: $0.index, data: Array($0.data.dropFirst(9))) } }
        let entries = try stored(plain, wrapper: wrapper)
        let target = Int(cutover) // entries[5], index 6
        let envelopeStart = layout == .proposal ? ProposalHeader.size : 0
        for position in envelopeStart..<entries[target].data.count {
            let directory = TemporaryDirectory()
            var tampered = entries
            tampered[target].data[position] ^= 0x01
            try writeLog(directory.path, tampered)
            let (log, result) = readAll(directory.path, gate: gate(layout))
            #expect(log.entries.map(\.index) == [1, 2, 3, 4, 5], "byte \(position)")
            guard case let .failure(WALError.unwrapFailed(index, lastDelivered, location, _)) = result else {
                Issue.record("byte \(position): unexpected \(result)")
                continue
            }
            #expect(index == 6 && lastDelivered == 5, "byte \(position)")
            #expect(location.segment == "0000000000000000-0000000000000000.wal")
        }
    }

    /// The proposal version byte is checked; the request id is clear and not authenticated
    /// (the raft AAD binds only 'R', version and key id), so it is reported, not verified.
    @Test func proposalHeader() throws {
        let directory = TemporaryDirectory()
        let wrapper = try RaftPayloadWrapper(keyID: 7, raftDEK: aesKey(KnownAnswer.raftDEK7))
        var entries = try stored(plainProposals(1...7), wrapper: wrapper)
        entries[5].data[0] = 0x02
        try writeLog(directory.path, entries)
        let (_, result) = readAll(directory.path, gate: gate())
        guard case let .failure(WALError.unwrapFailed(6, 5, _, reason)) = result else {
            Issue.record("unexpected \(result)")
            return
        }
        #expect(reason == .layout(.badProposalVersion(0x02)))

        let short = TemporaryDirectory()
        try writeLog(short.path, plainProposals(1...5) + [RaftEntry(term: 1, index: 6, data: [0x01, 0, 0])])
        #expect { try WALReader(directory: short.path, gate: gate()).verify() } throws: { error in
            guard case let WALError.unwrapFailed(6, 5, _, reason) = error else { return false }
            return reason == .layout(.proposalTooShort(length: 3))
        }
    }

    @Test func unknownRetiredAndRelabelledKeysStop() throws {
        let plain = plainProposals(1...7)
        // Unknown key id 9.
        let unknown = TemporaryDirectory()
        let stranger = try RaftPayloadWrapper(keyID: 9, raftDEK: aesKey(KnownAnswer.raftDEK7))
        try writeLog(unknown.path, try stored(plain, wrapper: stranger))
        #expect(try failure(unknown.path, gate()) == .envelope(.unknownKeyID(9)))

        // Retired key id 7.
        let retired = TemporaryDirectory()
        let wrapper = try RaftPayloadWrapper(keyID: 7, raftDEK: aesKey(KnownAnswer.raftDEK7))
        try writeLog(retired.path, try stored(plain, wrapper: wrapper))
        raftKeys.retired = [7]
        #expect(try failure(retired.path, gate()) == .envelope(.retiredKey(7)))
        raftKeys.retired = []

        // Sealed with key 7, relabelled as key 8 (which exists): the key id is in the AAD.
        let relabelled = TemporaryDirectory()
        var entries = try stored(plain, wrapper: wrapper)
        entries[5].data[ProposalHeader.size + 5] = 8
        try writeLog(relabelled.path, entries)
        #expect(try failure(relabelled.path, gate()) == .envelope(.authenticationFailed(keyID: 8)))

        // Wrong key under the right id.
        let wrongKey = TemporaryDirectory()
        let impostor = try RaftPayloadWrapper(keyID: 7, raftDEK: aesKey(String(repeating: "42", count: 32)))
        try writeLog(wrongKey.path, try stored(plain, wrapper: impostor))
        #expect(try failure(wrongKey.path, gate()) == .envelope(.authenticationFailed(keyID: 7)))

        // Armed gate without keys.
        #expect(try failure(retired.path, CutoverGate(cutover: cutover)) == .noRaftKeys)
    }

    /// A storage envelope sealed with the very same key bytes does not open as a raft
    /// envelope: the purpose byte 'S' versus 'R' in the AAD.
    @Test func storageEnvelopeInPlaceOfARaftEnvelopeStops() throws {
        let directory = TemporaryDirectory()
        let location = BlockLocation(volumeID: try VolumeID(hex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")),
                                     fileID: try FileID(hex("00112233445566778899aabbccddeeff")), blockIndex: 0)
        let storage = try StorageEnvelope.seal(KnownAnswer.plaintext, keyID: 7, fileKey: aesKey(KnownAnswer.raftDEK7),
                                               location: location, nonce: KnownAnswer.nonce)
        var entries = plainProposals(1...5)
        entries.append(RaftEntry(term: 1, index: 6, data: proposal(requestID: 6, storage)))
        try writeLog(directory.path, entries)
        #expect(try failure(directory.path, gate()) == .envelope(.authenticationFailed(keyID: 7)))
    }

    /// Only EntryNormal carries envelopes: an unknown entry type with data above the cutover
    /// fails closed, while conf changes and empty entries pass (see the boundary test).
    @Test func unknownEntryTypeStops() throws {
        let directory = TemporaryDirectory()
        try writeLog(directory.path, plainProposals(1...5) + [RaftEntry(type: RaftEntryType(rawValue: 7), term: 1, index: 6, data: [1])])
        #expect(try failure(directory.path, gate()) == .unsupportedEntryType(RaftEntryType(rawValue: 7)))
    }

    /// docs/FORMAT.md §10.6: the raw envelope and the one (proposal, request id 31337), opened by the gate.
    @Test func knownAnswerVectors() throws {
        #expect(try RaftEnvelope.seal(KnownAnswer.plaintext, keyID: 7, raftDEK: aesKey(KnownAnswer.raftDEK7),
                                      nonce: KnownAnswer.nonce) == KnownAnswer.rawEnvelope)
        #expect(RaftEnvelope.aad(keyID: 7) == hex("520100000007"))

        let raw = TemporaryDirectory()
        try writeLog(raw.path, plainProposals(1...5) + [RaftEntry(term: 1, index: 6, data: KnownAnswer.rawEnvelope)])
        let (rawLog, rawResult) = readAll(raw.path, gate: gate(.raw))
        _ = try rawResult.get()
        #expect(rawLog.entries.last?.data == KnownAnswer.plaintext)
        #expect(rawLog.keyIDs[6] == 7)

        let proposed = TemporaryDirectory()
        try writeLog(proposed.path, plainProposals(1...5) + [RaftEntry(term: 1, index: 6, data: KnownAnswer.proposalData)])
        let (log, result) = readAll(proposed.path, gate: gate(.proposal))
        _ = try result.get()
        #expect(log.entries.last?.data == proposal(requestID: 31337, KnownAnswer.plaintext))
        #expect(log.requestIDs[6] == 31337)

        // The same vector through the gate's per-entry API.
        let entry = RaftEntry(term: 1, index: 6, data: KnownAnswer.proposalData)
        #expect(try gate().admit(entry).data == proposal(requestID: 31337, KnownAnswer.plaintext))
        #expect(try gate(cutover: 6).admit(entry) == entry)
    }

    @Test func wrapper() throws {
        let payload = proposal(requestID: 42, Array("payload".utf8))
        let none: RaftPayloadWrapper? = nil
        #expect(try none.wrap(payload) == payload)

        let wrapper = try RaftPayloadWrapper(keyID: 7, raftDEK: aesKey(KnownAnswer.raftDEK7))
        let first = try wrapper.wrap(payload)
        let second = try wrapper.wrap(payload)
        #expect(first != second, "fresh random nonce per envelope")
        #expect(Array(first.prefix(9)) == Array(payload.prefix(9)), "proposal header stays clear")
        #expect(first.count == payload.count + Envelope.overhead)
        #expect(try gate().admit(RaftEntry(term: 1, index: 9, data: first)).data == payload)

        #expect(throws: PayloadLayoutError.proposalTooShort(length: 3)) { try wrapper.wrap([1, 2, 3]) }
        #expect(throws: EnvelopeError.reservedKeyID) { _ = try RaftPayloadWrapper(keyID: 0, raftDEK: aesKey(KnownAnswer.raftDEK7)) }
    }

    /// The reason the read stopped, requiring that it stopped at index 6 after delivering 1...5.
    func failure(_ directory: String, _ gate: CutoverGate) throws -> UnwrapFailure? {
        let (log, result) = readAll(directory, gate: gate)
        guard case let .failure(WALError.unwrapFailed(index, lastDelivered, _, reason)) = result else { return nil }
        #expect(index == 6 && lastDelivered == 5)
        #expect(log.entries.map(\.index) == [1, 2, 3, 4, 5])
        return reason
    }
}
