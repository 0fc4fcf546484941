import EpochFormat
import Glibc
import Support
import Testing
@testable import EpochWAL

/// Segments written by `WALWriter`, read back by `WALReader`.
@Suite struct ReaderTests {
    /// A log of `entryCount` entries saved in batches of 5, with a HardState per batch,
    /// cut into segments of about `segmentSize` bytes.
    func writeLog(_ directory: String, entryCount: UInt64, segmentSize: Int64 = 2048, size: Int = 40,
                  preallocate: Bool = false) throws -> WALWriter {
        let writer = try WALWriter(directory: directory, metadata: testMetadata,
                                   options: .init(segmentSize: segmentSize, preallocate: preallocate, sync: false))
        var next: UInt64 = 1
        while next <= entryCount {
            let last = min(next + 4, entryCount)
            try writer.save(hardState: HardState(term: 1, vote: 1, commit: last), entries: sampleEntries(next...last, size: size))
            next = last + 1
        }
        try writer.close()
        return writer
    }

    @Test func roundTripAcrossSegments() throws {
        let directory = TemporaryDirectory()
        let writer = try writeLog(directory.path, entryCount: 100)
        let (log, result) = readAll(directory.path)
        let summary = try result.get()
        #expect(summary.segments.count >= 3)
        #expect(summary.segments == writer.segments)
        #expect(log.metadata == [testMetadata])
        #expect(log.entries == sampleEntries(1...100))
        #expect(log.hardStates.last == HardState(term: 1, vote: 1, commit: 100))
        #expect(summary.firstIndex == 1 && summary.lastIndex == 100 && summary.entries == 100)
        #expect(summary.crc == writer.runningCRC)
        #expect(summary.replacedEntries == 0 && summary.unwrappedEntries == 0)
        guard case let .clean(end) = summary.end else { Issue.record("end \(summary.end)"); return }
        #expect(end.segment == writer.segments.last!.fileName)
        #expect(Int(end.offset) == fileSize(directory.file(end.segment)))
        // The second segment is named after the first index it expects, as etcd's cut names it.
        let second = summary.segments[1]
        #expect(second.sequence == 1)
        #expect(log.entries.contains { $0.index == second.index })
    }

    /// docs/FORMAT.md §11.5: crc(0), metadata, snapshot{0,0} open a fresh log, byte for byte.
    @Test func firstSegmentAnatomy() throws {
        let directory = TemporaryDirectory()
        _ = try writeLog(directory.path, entryCount: 1)
        let bytes = readFile(directory.file("0000000000000000-0000000000000000.wal"))
        #expect(Array(bytes[0..<16]) == hex("0400000000000084" + "08041000" + "00000000"))
        var crc = CRC32C()
        var expected: [UInt8] = []
        for (type, data) in [(UInt64(1), testMetadata), (5, [0x08, 0x00, 0x10, 0x00])] {
            crc.update(data)
            var record = ProtobufWriter()
            record.appendVarint(field: 1, type)
            record.appendVarint(field: 2, UInt64(crc.value))
            record.appendBytes(field: 3, data)
            let pad = (8 - record.bytes.count % 8) % 8
            expected += withUnsafeBytes(of: UInt64(record.bytes.count).littleEndian) { Array($0) }.dropLast() + [pad == 0 ? 0 : UInt8(0x80 | pad)]
            expected += record.bytes + [UInt8](repeating: 0, count: pad)
        }
        #expect(Array(bytes[16..<16 + expected.count]) == expected)
    }

    /// The final running CRC is the CRC-32C of every record's data, in order, across
    /// segments; every later segment's crc record carries the value reached before it.
    @Test func crcChainAcrossThreeSegments() throws {
        let directory = TemporaryDirectory()
        let writer = try WALWriter(directory: directory.path, metadata: testMetadata,
                                   options: .init(segmentSize: 700, sync: false))
        var allData = testMetadata + WALSnapshot().encoded
        var chainAtSegmentStart: [UInt32] = [0]
        for batch in 0..<3 {
            let entries = sampleEntries(UInt64(batch * 10 + 1)...UInt64(batch * 10 + 10))
            let state = HardState(term: 1, vote: 1, commit: UInt64(batch * 10 + 10))
            try writer.save(hardState: state, entries: entries)
            for entry in entries { allData += entry.encoded }
            allData += state.encoded
            chainAtSegmentStart.append(CRC32C.checksum(allData))
            allData += testMetadata + state.encoded // the cut's metadata and state records
        }
        try writer.close()
        #expect(writer.segments.count == 4)
        for (segment, expected) in zip(writer.segments, chainAtSegmentStart) {
            let bytes = readFile(directory.file(segment.fileName))
            let record = try bytes[8..<16].withUnsafeBytes { try DecodedRecord(UnsafeRawBufferPointer(rebasing: $0[0..<Int(bytes[0])])) }
            #expect(record.type == WALRecordType.crc.rawValue)
            #expect(record.crc == expected, "\(segment)")
        }
        let summary = try WALReader(directory: directory.path).verify()
        #expect(summary.crc == CRC32C.checksum(allData))
        #expect(summary.crc == writer.runningCRC)
    }

    @Test func brokenChainIsDetected() throws {
        let directory = TemporaryDirectory()
        let writer = try writeLog(directory.path, entryCount: 60, segmentSize: 1024)
        #expect(writer.segments.count >= 3)
        let third = writer.segments[2].fileName
        patchFile(directory.file(third), at: 11) { $0 ^ 0x01 } // first byte of the crc varint
        let (log, result) = readAll(directory.path)
        #expect(throws: WALError.self) { try result.get() }
        guard case let .failure(WALError.corrupt(.chainCRCMismatch(stored, running), location, lastIndex)) = result else {
            Issue.record("unexpected \(result)")
            return
        }
        #expect(stored != running)
        #expect(location == WALLocation(segment: third, offset: 0))
        #expect(lastIndex == log.entries.last?.index)
        #expect(String(describing: result).contains(third))
    }

    @Test func missingMiddleSegmentIsASequenceGap() throws {
        let directory = TemporaryDirectory()
        let writer = try writeLog(directory.path, entryCount: 60, segmentSize: 1024)
        unlink(directory.file(writer.segments[1].fileName))
        #expect { try WALReader(directory: directory.path).verify() } throws: { error in
            guard case WALError.sequenceGap = error else { return false }
            return true
        }
    }

    /// A reader may start at a later segment (older ones purged): the chain is seeded from
    /// its crc record, as etcd does.
    @Test func purgedPrefixSeedsTheChain() throws {
        let directory = TemporaryDirectory()
        let writer = try writeLog(directory.path, entryCount: 60, segmentSize: 1024)
        unlink(directory.file(writer.segments[0].fileName))
        let (log, result) = readAll(directory.path)
        let summary = try result.get()
        #expect(summary.crc == writer.runningCRC)
        #expect(log.entries.first?.index == writer.segments[1].index)
        #expect(log.entries.last?.index == 60)
    }

    // MARK: - Torn tails and corruption

    @Test func shortRecordInLastSegmentIsATornTail() throws {
        let directory = TemporaryDirectory()
        let writer = try writeLog(directory.path, entryCount: 30, segmentSize: 1 << 20)
        let tail = directory.file(writer.segments.last!.fileName)
        let (full, _) = readAll(directory.path)
        let lastEntry = try #require(full.entries.last)
        let bytes = readFile(tail)
        // Cut inside the state record that follows the last entry batch.
        let lastFrame = try #require(lastFrameOffset(bytes))
        writeFile(tail, Array(bytes[..<(lastFrame + 13)]))
        let (log, result) = readAll(directory.path)
        let summary = try result.get()
        #expect(summary.end == .torn(WALLocation(segment: writer.segments.last!.fileName, offset: Int64(lastFrame)),
                                     .shortRecord(needed: Int64(bytes.count - lastFrame - 8), available: 5)))
        #expect(log.entries.last == lastEntry)
        #expect(summary.lastIndex == 30)
    }

    @Test func shortLengthWordInLastSegmentIsATornTail() throws {
        let directory = TemporaryDirectory()
        let writer = try writeLog(directory.path, entryCount: 10, segmentSize: 1 << 20)
        let tail = directory.file(writer.segments.last!.fileName)
        let bytes = readFile(tail)
        writeFile(tail, bytes + [0x10, 0x00, 0x00])
        let summary = try WALReader(directory: directory.path).verify()
        #expect(summary.end == .torn(WALLocation(segment: writer.segments.last!.fileName, offset: Int64(bytes.count)),
                                     .shortLengthWord(available: 3)))
        #expect(summary.lastIndex == 10)
    }

    /// etcd's isTornEntry: a plausible record with an all-zero 512-byte sector (absolute file
    /// offsets) whose CRC fails is a torn write, in the last segment only.
    @Test func zeroSectorInLastSegmentIsATornTail() throws {
        let directory = TemporaryDirectory()
        let writer = try writeLog(directory.path, entryCount: 10, segmentSize: 1 << 20, size: 3000)
        let name = writer.segments.last!.fileName
        let tail = directory.file(name)
        var bytes = readFile(tail)
        let frame = try #require(entryFrameOffsets(bytes).last)
        let sector = (frame / 512 + 2) * 512
        for offset in sector..<sector + 512 { bytes[offset] = 0 }
        writeFile(tail, bytes)
        let (log, result) = readAll(directory.path)
        let summary = try result.get()
        #expect(summary.end == .torn(WALLocation(segment: name, offset: Int64(frame)), .zeroSector))
        #expect(log.entries.map(\.index) == Array(1...9))
    }

    @Test func zeroSectorBeforeTheLastSegmentIsCorruption() throws {
        let directory = TemporaryDirectory()
        let writer = try writeLog(directory.path, entryCount: 20, segmentSize: 8192, size: 3000)
        #expect(writer.segments.count >= 2)
        let name = writer.segments[0].fileName
        var bytes = readFile(directory.file(name))
        let frame = try #require(entryFrameOffsets(bytes).last)
        let sector = (frame / 512 + 2) * 512
        for offset in sector..<sector + 512 { bytes[offset] = 0 }
        writeFile(directory.file(name), bytes)
        let (log, result) = readAll(directory.path)
        guard case let .failure(WALError.corrupt(.recordCRCMismatch, location, lastIndex)) = result else {
            Issue.record("unexpected \(result)")
            return
        }
        #expect(location == WALLocation(segment: name, offset: Int64(frame)))
        #expect(lastIndex == log.entries.last?.index)
        #expect("\(WALError.corrupt(.recordCRCMismatch(stored: 1, computed: 2), at: location, lastIndex: lastIndex))"
            .contains("\(name) at offset \(frame)"))
    }

    @Test func truncatedSegmentBeforeTheLastIsCorruption() throws {
        let directory = TemporaryDirectory()
        let writer = try writeLog(directory.path, entryCount: 60, segmentSize: 1024)
        let name = writer.segments[1].fileName
        let bytes = readFile(directory.file(name))
        let lastFrame = try #require(lastFrameOffset(bytes))
        writeFile(directory.file(name), Array(bytes[..<(lastFrame + 12)]))
        #expect { try WALReader(directory: directory.path).verify() } throws: { error in
            guard case let WALError.corrupt(.truncatedRecord(_, available), location, _) = error else { return false }
            return available == 4 && location == WALLocation(segment: name, offset: Int64(lastFrame))
        }
    }

    /// A flipped byte with no zero sector is corruption even in the last segment.
    @Test func flippedByteInLastSegmentIsCorruption() throws {
        let directory = TemporaryDirectory()
        let writer = try writeLog(directory.path, entryCount: 10, segmentSize: 1 << 20)
        let name = writer.segments.last!.fileName
        let bytes = readFile(directory.file(name))
        let frame = entryFrameOffsets(bytes)[3]
        patchFile(directory.file(name), at: frame + 8 + 20) { $0 ^ 0x40 }
        #expect { try WALReader(directory: directory.path).verify() } throws: { error in
            guard case let WALError.corrupt(.recordCRCMismatch, location, lastIndex) = error else { return false }
            return location.offset == Int64(frame) && lastIndex == 3
        }
    }

    @Test func preallocatedTailEndsCleanly() throws {
        let directory = TemporaryDirectory()
        let writer = try writeLog(directory.path, entryCount: 40, segmentSize: 4096, preallocate: true)
        let tail = writer.segments.last!.fileName
        #expect(fileSize(directory.file(tail)) == 4096)
        #expect(writer.segments.dropLast().allSatisfy { fileSize(directory.file($0.fileName)) >= 4096 })
        let (log, result) = readAll(directory.path)
        let summary = try result.get()
        #expect(log.entries == sampleEntries(1...40))
        guard case let .clean(end) = summary.end else { Issue.record("end \(summary.end)"); return }
        #expect(end.segment == tail && end.offset < 4096)
    }

    // MARK: - Frame edge cases

    @Test func everyPaddingLengthRoundTrips() throws {
        let directory = TemporaryDirectory()
        let writer = try WALWriter(directory: directory.path, metadata: testMetadata, options: .init(sync: false))
        let entries = (1...24).map { RaftEntry(term: 1, index: UInt64($0), data: [UInt8](repeating: 0xab, count: $0)) }
        for entry in entries { try writer.save(entries: [entry]) }
        try writer.close()
        let bytes = readFile(directory.file(writer.segments[0].fileName))
        let pads = Set(frameOffsets(bytes).map { bytes[$0 + 7] })
        #expect(pads.isSuperset(of: [0x00, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87]))
        let (log, result) = readAll(directory.path)
        _ = try result.get()
        #expect(log.entries == entries)
    }

    @Test func paddingBitsThatDisagreeWithTheLengthAreCorruption() throws {
        let directory = TemporaryDirectory()
        let writer = try writeLog(directory.path, entryCount: 10, segmentSize: 1 << 20)
        let name = writer.segments[0].fileName
        let bytes = readFile(directory.file(name))
        let frame = try #require(frameOffsets(bytes).first { bytes[$0 + 7] != 0 })
        patchFile(directory.file(name), at: frame + 7) { $0 & 0x7f } // drop the padding flag
        #expect { try WALReader(directory: directory.path).verify() } throws: { error in
            guard case let WALError.corrupt(.badLengthWord, location, _) = error else { return false }
            return location.offset == Int64(frame)
        }
    }

    /// etcd reads top byte 0x80 as "padded by 0": accepted where no padding is due.
    @Test func flagWithZeroPaddingIsAccepted() throws {
        let directory = TemporaryDirectory()
        let writer = try writeLog(directory.path, entryCount: 10, segmentSize: 1 << 20)
        let name = writer.segments[0].fileName
        let bytes = readFile(directory.file(name))
        let frame = try #require(frameOffsets(bytes).first { bytes[$0 + 7] == 0 })
        patchFile(directory.file(name), at: frame + 7) { _ in 0x80 }
        let (log, result) = readAll(directory.path)
        _ = try result.get()
        #expect(log.entries == sampleEntries(1...10))
    }

    /// The record type is not covered by the CRC; an unknown one still fails closed.
    @Test func unknownRecordTypeIsCorruption() throws {
        let directory = TemporaryDirectory()
        let writer = try writeLog(directory.path, entryCount: 10, segmentSize: 1 << 20)
        let name = writer.segments[0].fileName
        let bytes = readFile(directory.file(name))
        let frame = entryFrameOffsets(bytes)[2]
        patchFile(directory.file(name), at: frame + 9) { _ in 0x09 }
        #expect { try WALReader(directory: directory.path).verify() } throws: { error in
            guard case let WALError.corrupt(.unexpectedRecordType(9), location, lastIndex) = error else { return false }
            return location.offset == Int64(frame) && lastIndex == 2
        }
    }

    /// Records larger than the read chunk grow the buffer for that record only.
    @Test func recordsLargerThanTheChunk() throws {
        let directory = TemporaryDirectory()
        let writer = try WALWriter(directory: directory.path, metadata: testMetadata,
                                   options: .init(segmentSize: 64 * 1024, sync: false))
        let entries = (1...30).map { RaftEntry(term: 1, index: UInt64($0), data: [UInt8](repeating: UInt8($0), count: $0 % 3 == 0 ? 9000 : 100)) }
        for batch in stride(from: 0, to: 30, by: 3) { try writer.save(entries: Array(entries[batch..<batch + 3])) }
        try writer.close()
        let (log, result) = readAll(directory.path, chunkSize: 4096)
        #expect(try result.get().crc == writer.runningCRC)
        #expect(log.entries == entries)
    }

    @Test func writerRefusesRecordsEtcdWouldReject() throws {
        let directory = TemporaryDirectory()
        let writer = try WALWriter(directory: directory.path, metadata: testMetadata, options: .init(sync: false))
        let before = writer.runningCRC
        #expect(throws: WALError.self) {
            try writer.save(entries: [RaftEntry(term: 1, index: 1, data: [UInt8](repeating: 1, count: 10 * 1024 * 1024))])
        }
        #expect(writer.runningCRC == before)
        try writer.save(entries: sampleEntries(1...2))
        try writer.close()
        let (log, result) = readAll(directory.path)
        _ = try result.get()
        #expect(log.entries == sampleEntries(1...2))
        #expect(throws: WALError.self) { _ = try WALWriter(directory: directory.path, metadata: testMetadata) }
    }

    // MARK: - Replay

    /// A new leader overwrites from index 6: the same index again truncates what followed.
    @Test func replacedEntriesTruncateWhatFollowed() throws {
        let directory = TemporaryDirectory()
        let writer = try WALWriter(directory: directory.path, metadata: testMetadata,
                                   options: .init(segmentSize: 1024, sync: false))
        try writer.save(hardState: HardState(term: 1, commit: 5), entries: sampleEntries(1...10, term: 1))
        try writer.save(hardState: HardState(term: 2, commit: 5), entries: sampleEntries(6...8, term: 2))
        try writer.save(hardState: HardState(term: 2, commit: 12), entries: sampleEntries(9...12, term: 2))
        try writer.close()
        let (log, result) = readAll(directory.path)
        let summary = try result.get()
        #expect(log.replayed == sampleEntries(1...5, term: 1) + sampleEntries(6...12, term: 2))
        #expect(log.events.filter { $0.hasPrefix("truncated") } == ["truncated 6"])
        let truncation = try #require(log.events.firstIndex(of: "truncated 6"))
        #expect(log.events[truncation - 2] == "entry 10" && log.events[truncation + 1] == "entry 6")
        #expect(summary.replacedEntries == 5)
        #expect(summary.entryRecords == 17)
        #expect(summary.firstIndex == 1 && summary.lastIndex == 12 && summary.entries == 12)
    }

    @Test func indexGapIsCorruption() throws {
        let directory = TemporaryDirectory()
        let writer = try WALWriter(directory: directory.path, metadata: testMetadata, options: .init(sync: false))
        try writer.save(entries: sampleEntries(1...3))
        try writer.save(entries: sampleEntries(5...6))
        try writer.close()
        #expect { try WALReader(directory: directory.path).verify() } throws: { error in
            guard case let WALError.corrupt(.indexGap(expected, found), _, lastIndex) = error else { return false }
            return expected == 4 && found == 5 && lastIndex == 3
        }
    }
}

// MARK: - Frame walking for tests

/// Offsets of every frame in a segment, up to the end or a zero word.
func frameOffsets(_ bytes: [UInt8]) -> [Int] {
    var offsets: [Int] = []
    var offset = 0
    while offset + 8 <= bytes.count {
        let word = bytes[offset..<offset + 8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard word != 0, let (length, padding) = Frame.decode(word), offset + 8 + Int(length + padding) <= bytes.count else { break }
        offsets.append(offset)
        offset += 8 + Int(length + padding)
    }
    return offsets
}

func lastFrameOffset(_ bytes: [UInt8]) -> Int? { frameOffsets(bytes).last }

/// Frames holding entry records (record type byte 0x02 right after `08`).
func entryFrameOffsets(_ bytes: [UInt8]) -> [Int] {
    frameOffsets(bytes).filter { bytes[$0 + 8] == 0x08 && bytes[$0 + 9] == 0x02 }
}
