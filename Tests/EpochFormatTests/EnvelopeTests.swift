import EpochCrypto
import EpochFormat
import Support
import Testing

/// The inputs of docs/FORMAT.md §10.1 (values in §10.3–§10.5).
enum Vectors {
    static let storageDEK = SecretBytes(copying: hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"))
    static let raftDEK = SecretBytes(copying: hex("202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"))
    static let volumeID = try! VolumeID(hex("0f1e2d3c4b5a69788796a5b4c3d2e1f0"))
    static let fileID = try! FileID(hex("00112233445566778899aabbccddeeff"))
    static let keyID: Epoch = 7
    static let nonce = hex("a0a1a2a3a4a5a6a7a8a9aaab")

    static func fileKey() throws -> AESGCMKey {
        try AESGCMKey(StorageEnvelope.fileKey(storageDEK: storageDEK, volumeID: volumeID, fileID: fileID))
    }

    static func location(_ block: UInt64) -> BlockLocation {
        BlockLocation(volumeID: volumeID, fileID: fileID, blockIndex: block)
    }
}

@Suite struct KnownAnswerTests {
    @Test func perFileKey() throws {
        let key = try StorageEnvelope.fileKey(storageDEK: Vectors.storageDEK, volumeID: Vectors.volumeID, fileID: Vectors.fileID)
        #expect(toHex(key.withUnsafeBytes { Array($0) }) == "04e8586636cc0a310b3da81de0dbd7abde2fcacbab137b98faa2449414395feb")
    }

    @Test func storageBlockZero() throws {
        #expect(toHex(StorageEnvelope.aad(keyID: 7, location: Vectors.location(0)))
            == "530100000000070f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff0000000000000000")
        let env = try StorageEnvelope.seal(Array("epochfs block zero".utf8), keyID: 7, fileKey: try Vectors.fileKey(),
                                           location: Vectors.location(0), nonce: Vectors.nonce)
        #expect(toHex(env) == "010000000007a0a1a2a3a4a5a6a7a8a9aaabc4423f0cb5ae1722f76aa024358f7a24934b8ae501c4e952874d968af15868a150bc")
    }

    @Test func storageBlockThreeOfZeros() throws {
        #expect(toHex(StorageEnvelope.aad(keyID: 7, location: Vectors.location(3)))
            == "530100000000070f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff0000000000000003")
        let env = try StorageEnvelope.seal([UInt8](repeating: 0, count: 4096), keyID: 7, fileKey: try Vectors.fileKey(),
                                           location: Vectors.location(3), nonce: Vectors.nonce)
        #expect(env.count == 4130)
        #expect(toHex(env.prefix(34)) == "010000000007a0a1a2a3a4a5a6a7a8a9aaaba132506fddc864029506cf475eaf0041")
        #expect(toHex(env.suffix(16)) == "aa6ad98dc9d106e7288505c40bc9c594")
        #expect(toHex(SHA256.hash(env)) == "2a300f9ed5c2d8753c7792a0cb4f4aa3f2f723984a6dae5a732ad07b34056a8e")
    }

    @Test func raftEnvelope() throws {
        #expect(toHex(RaftEnvelope.aad(keyID: 7)) == "520100000007")
        let env = try RaftEnvelope.seal(Array(#"{"op":"put","key":"k1","value":"v1"}"#.utf8), keyID: 7,
                                        raftDEK: try AESGCMKey(Vectors.raftDEK), nonce: Vectors.nonce)
        #expect(toHex(env) == "010000000007a0a1a2a3a4a5a6a7a8a9aaab051ecb44e6eda2dad45c8f96043613dfb345e36c0d960a0079f3a78cb64495da69641fc9d15938807e54a5a991dd0cbc04035b91")
        let opened = try RaftEnvelope.open(env, raftDEKs: { _ in try AESGCMKey(Vectors.raftDEK) })
        #expect(String(decoding: opened, as: UTF8.self) == #"{"op":"put","key":"k1","value":"v1"}"#)
    }
}

@Suite struct EnvelopeTests {
    let fileKey = try! Vectors.fileKey()
    let raftKey = try! AESGCMKey(Vectors.raftDEK)

    var fileKeys: EnvelopeKeyLookup {
        let key = fileKey
        return { id in
            guard id == Vectors.keyID else { throw EnvelopeError.unknownKeyID(id) }
            return key
        }
    }

    var raftKeys: EnvelopeKeyLookup {
        let key = raftKey
        return { id in
            guard id == Vectors.keyID else { throw EnvelopeError.unknownKeyID(id) }
            return key
        }
    }

    @Test(arguments: [0, 1, 4095, 4096, 4097, 1 << 20])
    func roundTrips(size: Int) throws {
        let plaintext = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let storage = try StorageEnvelope.seal(plaintext, keyID: 7, fileKey: fileKey, location: Vectors.location(9))
        #expect(storage.count == size + Envelope.overhead)
        #expect(try StorageEnvelope.open(storage, location: Vectors.location(9), fileKeys: fileKeys) == plaintext)
        let raft = try RaftEnvelope.seal(plaintext, keyID: 7, raftDEK: raftKey)
        #expect(raft.count == size + Envelope.overhead)
        #expect(try RaftEnvelope.open(raft, raftDEKs: raftKeys) == plaintext)
    }

    @Test func freshNonceEverySeal() throws {
        let a = try StorageEnvelope.seal([1, 2, 3], keyID: 7, fileKey: fileKey, location: Vectors.location(0))
        let b = try StorageEnvelope.seal([1, 2, 3], keyID: 7, fileKey: fileKey, location: Vectors.location(0))
        #expect(a[6..<18] != b[6..<18])
    }

    /// Flipping any one bit anywhere makes the envelope fail to open, with an envelope error.
    @Test(arguments: [0, 18, 4096])
    func everySingleBitFlipFails(size: Int) throws {
        let plaintext = [UInt8](repeating: 0x5a, count: size)
        let storage = try StorageEnvelope.seal(plaintext, keyID: 7, fileKey: fileKey, location: Vectors.location(1))
        let raft = try RaftEnvelope.seal(plaintext, keyID: 7, raftDEK: raftKey)
        var failures = 0
        for bit in 0..<(storage.count * 8) {
            var tampered = storage
            tampered[bit / 8] ^= 1 << UInt8(bit % 8)
            #expect(throws: EnvelopeError.self) {
                try StorageEnvelope.open(tampered, location: Vectors.location(1), fileKeys: fileKeys)
            }
            var tamperedRaft = raft
            tamperedRaft[bit / 8] ^= 1 << UInt8(bit % 8)
            #expect(throws: EnvelopeError.self) { try RaftEnvelope.open(tamperedRaft, raftDEKs: raftKeys) }
            failures += 1
        }
        #expect(failures == (size + 34) * 8)
    }

    @Test func structuralErrorsComeFirst() throws {
        let env = try RaftEnvelope.seal([1], keyID: 7, raftDEK: raftKey)
        #expect(throws: EnvelopeError.shortInput(length: 33)) { try RaftEnvelope.open(Array(env.prefix(33)), raftDEKs: raftKeys) }
        var version = env
        version[0] = 0x02
        #expect(throws: EnvelopeError.badVersion(2)) { try RaftEnvelope.open(version, raftDEKs: raftKeys) }
        var flag = env
        flag[1] = 0x01
        #expect(throws: EnvelopeError.badFlag(1)) { try RaftEnvelope.open(flag, raftDEKs: raftKeys) }
        var zero = env
        zero[2...5] = [0, 0, 0, 0]
        #expect(throws: EnvelopeError.reservedKeyID) { try RaftEnvelope.open(zero, raftDEKs: raftKeys) }
    }

    /// Relabelling an envelope with another epoch fails even where that epoch's key exists.
    @Test func keyIDTamperFails() throws {
        let other = try AESGCMKey(SecretBytes.random(count: 32))
        let both: EnvelopeKeyLookup = { [fileKey] id in id == 7 ? fileKey : other }
        let env = try StorageEnvelope.seal([9, 9, 9], keyID: 7, fileKey: fileKey, location: Vectors.location(0))
        var relabelled = env
        relabelled[5] = 8
        #expect(throws: EnvelopeError.authenticationFailed(keyID: 8)) {
            try StorageEnvelope.open(relabelled, location: Vectors.location(0), fileKeys: both)
        }
        // The same key under both ids: only the AAD's key id stops it.
        let same: EnvelopeKeyLookup = { [fileKey] _ in fileKey }
        #expect(throws: EnvelopeError.authenticationFailed(keyID: 8)) {
            try StorageEnvelope.open(relabelled, location: Vectors.location(0), fileKeys: same)
        }
    }

    /// The purpose byte separates the layers even when both use the same key.
    @Test func layerConfusionFails() throws {
        let shared: EnvelopeKeyLookup = { [raftKey] _ in raftKey }
        let storage = try StorageEnvelope.seal([1, 2, 3], keyID: 7, fileKey: raftKey, location: Vectors.location(0))
        #expect(throws: EnvelopeError.authenticationFailed(keyID: 7)) { try RaftEnvelope.open(storage, raftDEKs: shared) }
        let raft = try RaftEnvelope.seal([1, 2, 3], keyID: 7, raftDEK: raftKey)
        #expect(throws: EnvelopeError.authenticationFailed(keyID: 7)) {
            try StorageEnvelope.open(raft, location: Vectors.location(0), fileKeys: shared)
        }
    }

    @Test func movedBlockFails() throws {
        let env = try StorageEnvelope.seal([7, 7, 7], keyID: 7, fileKey: fileKey, location: Vectors.location(4))
        var otherIndex = Vectors.location(4)
        otherIndex.blockIndex = 5
        var otherFile = Vectors.location(4)
        otherFile.fileID = try FileID(hex("ffeeddccbbaa99887766554433221100"))
        var otherVolume = Vectors.location(4)
        otherVolume.volumeID = try VolumeID(hex("00000000000000000000000000000001"))
        for location in [otherIndex, otherFile, otherVolume] {
            #expect(throws: EnvelopeError.authenticationFailed(keyID: 7)) {
                try StorageEnvelope.open(env, location: location, fileKeys: fileKeys)
            }
        }
        #expect(try StorageEnvelope.open(env, location: Vectors.location(4), fileKeys: fileKeys) == [7, 7, 7])
    }

    @Test func reusedStorageAADMatchesTheAADOfEachBlock() throws {
        let base = Vectors.location(0)
        var reused = StorageAAD(keyID: 9, volumeID: base.volumeID, fileID: base.fileID)
        for index: UInt64 in [3, 0, 255, 256, 1 << 40 | 7, 3] {
            var location = base
            location.blockIndex = index
            let bytes = reused.withBlock(index) { Array($0) }
            #expect(bytes == StorageEnvelope.aad(keyID: 9, location: location), "block \(index)")
        }
    }
}
