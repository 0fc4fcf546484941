import EpochCrypto
import EpochFormat
import Foundation
import Support
import Testing

/// `Epoch`: ordered by number, printed, parsed and coded as the bare number, big-endian in bytes.
@Suite struct EpochTests {
    /// Above 2^31 and with bytes that differ in order, so a signed, text or little-endian reading fails.
    let high = Epoch(rawValue: 0x8102_0304)

    @Test func ordersByNumberNotByText() {
        let epochs: [Epoch] = [10, 2, 0xffff_ffff, 9, 256, 255]
        #expect(epochs.sorted() == [2, 9, 10, 255, 256, 0xffff_ffff])
        #expect(epochs.max() == Epoch(rawValue: .max))
        #expect(high > Epoch(rawValue: 0x7fff_ffff))
    }

    @Test func printsTheBareNumber() {
        #expect(high.description == "2164392708")
        #expect("epoch \(7 as Epoch)" == "epoch 7")
        #expect(String(describing: Epoch(rawValue: .max)) == "4294967295")
    }

    @Test func parsesDecimalText() {
        #expect(Epoch(parsing: "2164392708") == high)
        #expect(Epoch(parsing: "4294967295") == Epoch(rawValue: .max))
        #expect(Epoch(parsing: "0") == 0, "parsed; each caller rejects the reserved value itself")
        for bad in ["", "x", "-1", "4294967296", " 1", "1 ", "1.0", "0x10"] {
            #expect(Epoch(parsing: bad) == nil, "'\(bad)'")
        }
    }

    @Test func codesAsTheBareNumberInJSON() throws {
        struct Report: Codable, Equatable { let epoch: Epoch; let referenced: [Epoch] }
        let report = Report(epoch: high, referenced: [1, 3])
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let json = try encoder.encode(report)
        #expect(String(decoding: json, as: UTF8.self) == #"{"epoch":2164392708,"referenced":[1,3]}"#)
        #expect(try JSONDecoder().decode(Report.self, from: json) == report)
    }

    @Test func roundTripsBigEndianThroughTheFormatCode() throws {
        var writer = ByteWriter()
        writer.append(high)
        #expect(writer.bytes == [0x81, 0x02, 0x03, 0x04])
        var reader = ByteReader(writer.bytes[...], what: "epoch")
        #expect(try reader.readEpoch() == high)

        let envelope = try Envelope.seal(Array("x".utf8), keyID: high, key: AESGCMKey(Vectors.raftDEK), aad: [])
        #expect(Array(envelope[2..<6]) == [0x81, 0x02, 0x03, 0x04])
        #expect(try envelope.withUnsafeBytes { try Envelope.keyID(of: $0) } == high)

        var slot = HeaderSlot(volumeID: Vectors.volumeID, sequence: 1, epoch: high, blockSize: 4096, raftCutover: 0,
                              keyDerivation: .direct, keySource: "file:/k/%d.key")
        let key = try SecretBytes.random(count: 32)
        try slot.seal(try Keyring.create(epoch: high), wrappingKey: key)
        let bytes = try slot.encoded()
        // The epoch field, BE32 at offset 36 (docs/FORMAT.md §3.1).
        #expect(Array(bytes[36..<40]) == [0x81, 0x02, 0x03, 0x04])
        let decoded = try HeaderSlot.decode(bytes)
        #expect(decoded.epoch == high)
        #expect(try decoded.openKeyring(wrappingKey: key).activeEpoch == high)
    }
}
