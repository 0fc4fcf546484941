import EpochFormat
import Foundation
import Testing

@Suite struct Base64Tests {
    /// Bytes whose digits reach the last two of the alphabet (0xfb 0xff), so the alphabets differ.
    static let bytes: [UInt8] = [0xfb, 0xff, 0xbe, 0x00, 0x7f, 0x3e]

    @Test(arguments: 0...5)
    func standardMatchesFoundation(length: Int) {
        let input = Array(Self.bytes.prefix(length))
        #expect(Base64Standard.encode(input) == Data(input).base64EncodedString())
        #expect(Base64Standard.encodedCount(length) == Data(input).base64EncodedString().utf8.count)
    }

    /// base64url is the standard encoding with `-` and `_` for `+` and `/`, and no padding.
    @Test(arguments: 0...5)
    func urlIsFoundationsUnpaddedWithItsAlphabet(length: Int) {
        let input = Array(Self.bytes.prefix(length))
        let expected = Data(input).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        #expect(Base64URL.encode(input) == expected)
        #expect(Base64URL.encodedCount(length) == expected.utf8.count)
        #expect(Base64URL.decode(expected) == input)
    }

    /// The buffer form writes exactly `encodedCount` digits and nothing past them.
    @Test func encodesIntoABuffer() {
        var out = [UInt8](repeating: 0xaa, count: 16)
        let written = Self.bytes.prefix(4).withUnsafeBytes { input in
            out.withUnsafeMutableBytes { Base64Standard.encode(input, into: $0) }
        }
        #expect(written == Base64Standard.encodedCount(4))
        #expect(String(decoding: out.prefix(written), as: UTF8.self) == "+/++AA==")
        #expect(out.dropFirst(written).allSatisfy { $0 == 0xaa })
    }

    /// Names decode only from their one canonical spelling.
    @Test func urlDecodingRefusesOtherSpellings() {
        #expect(Base64URL.decode("-_--") == [0xfb, 0xff, 0xbe])
        #expect(Base64URL.decode("-_8=") == nil) // padding
        #expect(Base64URL.decode("+/++") == nil) // the standard alphabet's last two digits
        #expect(Base64URL.decode("-_--A") == nil) // a length no encoding has
        #expect(Base64URL.decode("AB") == nil) // leftover bits not zero: "AA" is the encoding of [0]
        #expect(Base64URL.decode("AA") == [0])
    }
}
