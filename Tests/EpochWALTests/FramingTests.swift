import Support
import Testing
@testable import EpochWAL

@Suite struct FramingTests {
    /// docs/FORMAT.md §11.2: pad = (8 - N % 8) % 8, top byte 0x80 | pad when pad != 0.
    @Test func lengthWordsMatchEtcdsEncoder() {
        #expect(Frame.lengthWord(recordLength: 4) == 0x8400_0000_0000_0004) // the crc record of §11.5
        #expect(Frame.lengthWord(recordLength: 0x1d) == 0x8300_0000_0000_001d)
        #expect(Frame.lengthWord(recordLength: 16) == 16)
        for length in 1...64 {
            let word = Frame.lengthWord(recordLength: length)
            let decoded = Frame.decode(word)
            #expect(decoded?.length == Int64(length))
            #expect(decoded?.padding == Int64((8 - length % 8) % 8))
            #expect((Int64(length) + decoded!.padding) % 8 == 0)
        }
    }

    @Test func strictTopByte() {
        // 0x80 with no padding: etcd reads it the same way, so it is accepted when N % 8 == 0.
        #expect(Frame.decode(0x8000_0000_0000_0010)! == (16, 0))
        #expect(Frame.decode(0x8000_0000_0000_0011) == nil)
        // Padding that disagrees with the length.
        #expect(Frame.decode(0x8300_0000_0000_0004) == nil)
        #expect(Frame.decode(0x0000_0000_0000_0004) == nil)
        // Top bytes etcd's encoder never writes.
        #expect(Frame.decode(0x0100_0000_0000_0010) == nil)
        #expect(Frame.decode(0x7f00_0000_0000_0010) == nil)
        #expect(Frame.decode(0x8c00_0000_0000_0004) == nil)
        #expect(Frame.decode(0xff00_0000_0000_0001) == nil)
    }
}

@Suite struct SegmentNameTests {
    @Test func namesAsEtcdWritesThem() {
        #expect(WALSegmentName(sequence: 1, index: 0x38).fileName == "0000000000000001-0000000000000038.wal")
        let parsed = WALSegmentName(fileName: "0000000000000001-0000000000000038.wal")
        #expect(parsed?.sequence == 1)
        #expect(parsed?.index == 56)
    }

    /// etcd's parseWALName: suffix `.wal`, then Sscanf `%016x-%016x.wal`.
    @Test func namesAsEtcdParsesThem() {
        #expect(WALSegmentName(fileName: "0.tmp") == nil)
        #expect(WALSegmentName(fileName: "0000000000000001-0000000000000038.wal.broken") == nil)
        #expect(WALSegmentName(fileName: "0000000000000001-0000000000000038.wal.tmp") == nil)
        #expect(WALSegmentName(fileName: "db") == nil)
        #expect(WALSegmentName(fileName: "x-1.wal") == nil)
        #expect(WALSegmentName(fileName: "00000000000000001-0000000000000038.wal") == nil) // 17 digits
        #expect(WALSegmentName(fileName: "A-FF.wal")?.index == 255) // Sscanf takes short and upper-case hex
        #expect(WALSegmentName(fileName: "1-2.wal.wal")?.sequence == 1) // trailing text after the match is ignored
    }

    @Test func listingSkipsOtherFilesAndRequiresConsecutiveSequence() throws {
        let directory = TemporaryDirectory()
        for name in ["0000000000000000-0000000000000000.wal", "0000000000000001-0000000000000010.wal",
                     "0.tmp", "0000000000000001-0000000000000010.wal.broken", "notes.txt"] {
            writeFile(directory.file(name), [])
        }
        let names = try WALSegmentName.list(directory: directory.path)
        #expect(names.map(\.sequence) == [0, 1])

        writeFile(directory.file("0000000000000003-0000000000000020.wal"), [])
        #expect {
            _ = try WALSegmentName.list(directory: directory.path)
        } throws: { error in
            guard case let WALError.sequenceGap(previous, next) = error else { return false }
            return previous == "0000000000000001-0000000000000010.wal" && next == "0000000000000003-0000000000000020.wal"
        }
        let empty = TemporaryDirectory()
        #expect(throws: WALError.self) { _ = try WALSegmentName.list(directory: empty.path) }
    }
}
