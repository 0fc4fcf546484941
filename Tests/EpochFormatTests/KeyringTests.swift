import EpochCrypto
import EpochFormat
import Support
import Testing

/// A keyring encoding written out by hand from docs/FORMAT.md: epoch 3 retired, 5 read-only,
/// 6 active.
func handEncodedKeyring() -> [UInt8] {
    var bytes: [UInt8] = [1] + [UInt8](repeating: 0xaa, count: 64) + [0, 3]
    bytes += [0, 0, 0, 3, 3]
    bytes += [0, 0, 0, 5, 2] + [UInt8](repeating: 0x51, count: 32) + [UInt8](repeating: 0x52, count: 32)
    bytes += [0, 0, 0, 6, 1] + [UInt8](repeating: 0x61, count: 32) + [UInt8](repeating: 0x62, count: 32)
    return bytes
}

@Suite struct KeyringTests {
    @Test func decodesTheDocumentedLayout() throws {
        let keyring = try Keyring.decode(SecretBytes(copying: handEncodedKeyring()))
        #expect(keyring.epochs.map(\.epoch) == [3, 5, 6])
        #expect(keyring.epochs.map(\.state) == [.retired, .readOnly, .active])
        #expect(keyring.activeEpoch == 6)
        #expect(keyring.encoded().withUnsafeBytes { Array($0) } == handEncodedKeyring())
    }

    /// Unknown and retired key ids fail, each with its own error.
    @Test func unknownAndRetiredKeyIDs() throws {
        let keyring = try Keyring.decode(SecretBytes(copying: handEncodedKeyring()))
        #expect(throws: EnvelopeError.retiredKey(3)) { try keyring.keys(for: 3) }
        #expect(throws: EnvelopeError.unknownKeyID(4)) { try keyring.keys(for: 4) }
        let five = try keyring.keys(for: 5)
        #expect(five.storageDEK?.withUnsafeBytes { Array($0) } == [UInt8](repeating: 0x51, count: 32))
        #expect(five.raftDEK?.withUnsafeBytes { Array($0) } == [UInt8](repeating: 0x52, count: 32))

        // Through the envelope opener: a storage block naming a retired epoch fails closed.
        let lookup: EnvelopeKeyLookup = { id in try AESGCMKey(try keyring.keys(for: id).raftDEK!) }
        let sealed = try RaftEnvelope.seal([1], keyID: 3, raftDEK: try AESGCMKey(SecretBytes.random(count: 32)))
        #expect(throws: EnvelopeError.retiredKey(3)) { try RaftEnvelope.open(sealed, raftDEKs: lookup) }
        let unknown = try RaftEnvelope.seal([1], keyID: 9, raftDEK: try AESGCMKey(SecretBytes.random(count: 32)))
        #expect(throws: EnvelopeError.unknownKeyID(9)) { try RaftEnvelope.open(unknown, raftDEKs: lookup) }
    }

    @Test func addingAnEpochDemotesTheActiveOne() throws {
        let first = try Keyring.create(epoch: 2)
        let second = try first.adding(epoch: 5)
        #expect(second.epochs.map(\.epoch) == [2, 5])
        #expect(second.epochs.map(\.state) == [.readOnly, .active])
        #expect(second.nameKey.isEqual(to: first.nameKey))
        #expect(second.epochs[0].storageDEK!.isEqual(to: first.epochs[0].storageDEK!))
        #expect(!second.epochs[1].storageDEK!.isEqual(to: first.epochs[0].storageDEK!))
        let decoded = try Keyring.decode(second.encoded())
        #expect(decoded.epochs.map(\.epoch) == [2, 5])
        #expect(decoded.epochs[1].raftDEK!.isEqual(to: second.epochs[1].raftDEK!))
    }

    @Test func rejectsMalformedEncodings() throws {
        var twoActive = handEncodedKeyring()
        twoActive[64 + 3 + 5 + 4] = 1 // epoch 5 marked active too
        #expect(throws: FormatError.self) { try Keyring.decode(SecretBytes(copying: twoActive)) }
        #expect(throws: FormatError.self) { try Keyring.decode(SecretBytes(copying: handEncodedKeyring().dropLast())) }
        #expect(throws: FormatError.self) { try Keyring.decode(SecretBytes(copying: handEncodedKeyring() + [0])) }
    }
}

/// docs/FORMAT.md §10.14: the cluster id, and the wrapping key of §10.1 as the cluster secret.
enum ClusterVectors {
    static let clusterID = try! ClusterID("5f0c8a2e-4b1d-4c3e-9a7f-1e2d3c4b5a69")
    static let wrappingKey = SecretBytes(copying: Array(0x40...0x5f))
    static let raftDEK7 = hex("f00b2d376bca9884835d41643166babfe89b907da098dbba8802396c6609026a")
    static let raftDEK8 = hex("fb950ed92945dafd035149f7c48a1379a79ff93c3ef056130cc24c34d2fe3406")
    static let keyring = hex("02") + Array(0...0x3f) + [36] + Array("5f0c8a2e-4b1d-4c3e-9a7f-1e2d3c4b5a69".utf8)
        + hex("00010000000701") + Array(0...0x1f) + raftDEK7
}

func bytes(_ secret: SecretBytes?) -> [UInt8]? { secret?.withUnsafeBytes { Array($0) } }

@Suite struct ClusterKeyringTests {
    @Test func raftDEKsMatchTheVectors() throws {
        let id = ClusterVectors.clusterID
        #expect(bytes(try id.raftDEK(clusterSecret: ClusterVectors.wrappingKey, epoch: 7)) == ClusterVectors.raftDEK7)
        #expect(bytes(try id.raftDEK(clusterSecret: ClusterVectors.wrappingKey, epoch: 8)) == ClusterVectors.raftDEK8)
        // The cluster id is the salt: another id, same secret and epoch, another key.
        let other = try ClusterID("5f0c8a2e-4b1d-4c3e-9a7f-1e2d3c4b5a6A")
        #expect(bytes(try other.raftDEK(clusterSecret: ClusterVectors.wrappingKey, epoch: 7)) != ClusterVectors.raftDEK7)
    }

    /// The version 2 layout of FORMAT §3.3, byte for byte, both ways.
    @Test func decodesAndEncodesTheDocumentedLayout() throws {
        let keyring = try Keyring.decode(SecretBytes(copying: ClusterVectors.keyring))
        #expect(keyring.clusterID == ClusterVectors.clusterID)
        #expect(keyring.epochs.map(\.epoch) == [7])
        #expect(bytes(keyring.active.raftDEK) == ClusterVectors.raftDEK7)
        #expect(bytes(keyring.encoded()) == ClusterVectors.keyring)
        // A volume without a cluster id keeps version 1.
        let plain = try Keyring.decode(SecretBytes(copying: handEncodedKeyring()))
        #expect(plain.clusterID == nil)
        #expect(bytes(plain.encoded())?.first == 1)
    }

    /// Created and rekeyed, a cluster member's raft DEKs are the derived ones and its storage
    /// DEKs random; a member made with the same secrets gets the same raft DEKs.
    @Test func createAndAddDeriveTheRaftDEK() throws {
        let secret8 = try SecretBytes.random(count: 32)
        let members = try (0..<2).map { _ in
            try Keyring.create(epoch: 7, clusterID: ClusterVectors.clusterID, clusterSecret: ClusterVectors.wrappingKey)
                .adding(epoch: 8, clusterSecret: secret8)
        }
        for member in members {
            #expect(member.clusterID == ClusterVectors.clusterID)
            #expect(bytes(member.epochs[0].raftDEK) == ClusterVectors.raftDEK7)
            #expect(bytes(member.epochs[1].raftDEK) == bytes(try ClusterVectors.clusterID.raftDEK(clusterSecret: secret8, epoch: 8)))
            #expect(try Keyring.decode(member.encoded()).clusterID == ClusterVectors.clusterID)
        }
        #expect(!members[0].epochs[1].storageDEK!.isEqual(to: members[1].epochs[1].storageDEK!))
        #expect(!members[0].nameKey.isEqual(to: members[1].nameKey))
    }

    @Test func rejectsBadClusterIDs() throws {
        for name in ["", String(repeating: "c", count: 65), "with space", "tab\there", "caf\u{e9}", "del\u{7f}"] {
            #expect(throws: FormatError.self, "\(name.debugDescription)") { try ClusterID(name) }
        }
        #expect(try ClusterID(String(repeating: "c", count: 64)).bytes.count == 64)
        let lengthOffset = 1 + 64
        var empty = ClusterVectors.keyring
        empty[lengthOffset] = 0
        var long = ClusterVectors.keyring
        long[lengthOffset] = 65
        var space = ClusterVectors.keyring
        space[lengthOffset + 1] = 0x20
        var version3 = ClusterVectors.keyring
        version3[0] = 3
        for malformed in [empty, long, space, version3, Array(ClusterVectors.keyring.prefix(lengthOffset + 10))] {
            #expect(throws: FormatError.self) { try Keyring.decode(SecretBytes(copying: malformed)) }
        }
    }
}

@Suite struct HeaderSlotTests {
    func sealedSlot(epoch: Epoch = 4, key: SecretBytes) throws -> HeaderSlot {
        var slot = HeaderSlot(volumeID: Vectors.volumeID, sequence: 12, epoch: epoch, blockSize: 4096, raftCutover: 99,
                              keyDerivation: try .freshScrypt(), keySource: "passphrase:/k")
        try slot.seal(try Keyring.create(epoch: epoch), wrappingKey: key)
        return slot
    }

    @Test func roundTripAndLayout() throws {
        let key = try SecretBytes.random(count: 32)
        let slot = try sealedSlot(key: key)
        let bytes = try slot.encoded()
        #expect(bytes.count == HeaderSlot.size)
        #expect(Array(bytes[0..<8]) == Array("EPOCHFS\u{1}".utf8))
        #expect(Array(bytes[28..<36]) == [0, 0, 0, 0, 0, 0, 0, 12]) // sequence, big-endian
        #expect(Array(bytes[36..<40]) == [0, 0, 0, 4]) // epoch
        let decoded = try HeaderSlot.decode(bytes)
        #expect(decoded == slot)
        #expect(try decoded.openKeyring(wrappingKey: key).activeEpoch == 4)
    }

    @Test func tornOrEmptySlotsAreRecognised() throws {
        let bytes = try sealedSlot(key: try SecretBytes.random(count: 32)).encoded()
        #expect(throws: HeaderSlotError.empty) { try HeaderSlot.decode([UInt8](repeating: 0, count: HeaderSlot.size)) }
        for offset in [9, 40, 500, 1200, HeaderSlot.size - 1] {
            var damaged = bytes
            damaged[offset] ^= 0x01
            #expect(throws: HeaderSlotError.checksumMismatch) { try HeaderSlot.decode(damaged) }
        }
        let torn = Array(bytes.prefix(4096)) + [UInt8](repeating: 0, count: HeaderSlot.size - 4096)
        #expect(throws: HeaderSlotError.checksumMismatch) { try HeaderSlot.decode(torn) }
    }

    /// A wrong key is told apart from a torn write: the checksum holds, the AEAD fails.
    @Test func wrongKeyIsNotTorn() throws {
        let slot = try sealedSlot(key: try SecretBytes.random(count: 32))
        let decoded = try HeaderSlot.decode(try slot.encoded())
        #expect(throws: HeaderSlotError.wrongKey(epoch: 4)) { try decoded.openKeyring(wrappingKey: try SecretBytes.random(count: 32)) }
    }

    /// Every clear field is AAD: changing the epoch, sequence or volume id and fixing up the
    /// checksum still fails to open.
    @Test func clearFieldsAreBound() throws {
        let key = try SecretBytes.random(count: 32)
        let slot = try sealedSlot(key: key)
        var epochChanged = slot
        epochChanged.epoch = 5
        var sequenceChanged = slot
        sequenceChanged.sequence = 13
        var volumeChanged = slot
        volumeChanged.volumeID = try VolumeID(hex("00000000000000000000000000000001"))
        var cutoverChanged = slot
        cutoverChanged.raftCutover = 100
        for forged in [epochChanged, sequenceChanged, volumeChanged, cutoverChanged] {
            let reparsed = try HeaderSlot.decode(try forged.encoded())
            #expect(throws: HeaderSlotError.wrongKey(epoch: forged.epoch)) { try reparsed.openKeyring(wrappingKey: key) }
        }
    }
}
