import EpochCrypto
import Support
import Testing

extension SecretBytes {
    /// A copy for comparisons in tests only.
    var bytes: [UInt8] { withUnsafeBytes { Array($0) } }
}

@Suite struct AESGCMTests {
    let key = try! AESGCMKey(SecretBytes(copying: hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")))
    let nonce = hex("a0a1a2a3a4a5a6a7a8a9aaab")

    @Test(arguments: [0, 1, 15, 16, 17, 4096, 65_537])
    func roundTrip(size: Int) throws {
        let plaintext = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let sealed = try key.seal(nonce: nonce, aad: [1, 2, 3], plaintext: plaintext)
        #expect(sealed.count == size + 16)
        #expect(size == 0 || Array(sealed.prefix(size)) != plaintext)
        #expect(try key.open(nonce: nonce, aad: [1, 2, 3], sealed: sealed) == plaintext)
    }

    /// NIST GCM test case 14 (AES-256, zero key, zero IV, one zero block).
    @Test func nistVector() throws {
        let zeroKey = try AESGCMKey(SecretBytes(copying: [UInt8](repeating: 0, count: 32)))
        let sealed = try zeroKey.seal(nonce: [UInt8](repeating: 0, count: 12), aad: [], plaintext: [UInt8](repeating: 0, count: 16))
        #expect(toHex(sealed) == "cea7403d4d606b6e074ec5d3baf39d18" + "d0d1c8a799996bf0265b98b5d48ab919")
    }

    @Test func wrongAADOrTamperFails() throws {
        let sealed = try key.seal(nonce: nonce, aad: [9], plaintext: Array("secret".utf8))
        #expect(throws: CryptoError.authenticationFailed) { try key.open(nonce: nonce, aad: [8], sealed: sealed) }
        var tampered = sealed
        tampered[0] ^= 1
        #expect(throws: CryptoError.authenticationFailed) { try key.open(nonce: nonce, aad: [9], sealed: tampered) }
        #expect(throws: CryptoError.authenticationFailed) { try key.open(nonce: nonce, aad: [9], sealed: Array(sealed.prefix(10))) }
    }

    @Test func wrongKeyLengthIsRejected() {
        #expect(throws: CryptoError.invalidLength(what: "AES-256-GCM key", expected: 32, actual: 16)) {
            try AESGCMKey(SecretBytes(copying: [UInt8](repeating: 0, count: 16)))
        }
    }

    /// Many threads sealing and opening with one key at once: every result must be exact,
    /// which fails if two threads ever shared a context.
    @Test func concurrentUseOfOneKey() async throws {
        let key = self.key
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    for round in 0..<500 {
                        let nonce = try SecureRandom.bytes(12)
                        let plaintext = [UInt8](repeating: UInt8(worker), count: 100 + round)
                        let sealed = try key.seal(nonce: nonce, aad: [UInt8(round & 0xff)], plaintext: plaintext)
                        let opened = try key.open(nonce: nonce, aad: [UInt8(round & 0xff)], sealed: sealed)
                        #expect(opened == plaintext)
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}

@Suite struct AESSIVTests {
    let key = try! AESSIVKey(SecretBytes(copying: Array(0..<64)))

    /// Computed with Python's `cryptography` (AESSIV, a 512-bit key): output is SIV ‖ ciphertext.
    @Test func knownAnswer() throws {
        let sealed = try key.seal(Array("hello.txt".utf8), aad: hex("00112233445566778899aabbccddeeff"))
        #expect(toHex(sealed) == "5c74e6c53f8191fe063539d3004ec8bb310bca29d6375dd6da")
    }

    @Test func deterministicAndBoundToAAD() throws {
        let name = Array("a very long file name.txt".utf8)
        let a = try key.seal(name, aad: [1])
        #expect(try key.seal(name, aad: [1]) == a)
        #expect(try key.seal(name, aad: [2]) != a)
        #expect(try key.open(a, aad: [1]) == name)
        #expect(throws: CryptoError.authenticationFailed) { try key.open(a, aad: [2]) }
        for index in a.indices {
            var tampered = a
            tampered[index] ^= 0x40
            #expect(throws: CryptoError.authenticationFailed) { try key.open(tampered, aad: [1]) }
        }
    }
}

@Suite struct KDFTests {
    /// RFC 5869 test case 1.
    @Test func hkdfRFC5869() throws {
        let okm = try HKDF.sha256(key: SecretBytes(copying: [UInt8](repeating: 0x0b, count: 22)),
                                  salt: hex("000102030405060708090a0b0c"), info: hex("f0f1f2f3f4f5f6f7f8f9"), count: 42)
        #expect(toHex(okm.bytes) == "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    }

    /// RFC 7914 §12, second vector.
    @Test func scryptRFC7914() throws {
        let key = try ScryptParameters(log2N: 10, r: 8, p: 16)
            .derive(passphrase: SecretBytes(copying: Array("password".utf8)), salt: Array("NaCl".utf8), count: 64)
        #expect(toHex(key.bytes) == "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
            + "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640")
    }

    @Test func sha256() {
        #expect(toHex(SHA256.hash(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }
}

@Suite struct RandomAndSecretsTests {
    @Test func randomBytesDiffer() throws {
        let a = try SecureRandom.bytes(32)
        let b = try SecureRandom.bytes(32)
        #expect(a.count == 32)
        #expect(a != b)
    }

    @Test func noncesAreUniqueAcrossBatches() throws {
        var seen = Set<[UInt8]>()
        for _ in 0..<2000 { // more than one 4 KiB batch of 12-byte nonces
            var nonce = [UInt8](repeating: 0, count: 12)
            try nonce.withUnsafeMutableBytes { try NonceSource.fill($0) }
            #expect(seen.insert(nonce).inserted)
        }
    }

    @Test func secretComparisonIsByValue() throws {
        let a = SecretBytes(copying: [1, 2, 3])
        #expect(a.isEqual(to: SecretBytes(copying: [1, 2, 3])))
        #expect(!a.isEqual(to: SecretBytes(copying: [1, 2, 4])))
        #expect(!a.isEqual(to: SecretBytes(copying: [1, 2])))
    }
}
