import EpochCrypto
import EpochFormat
@testable import EpochHeader
import EpochIO
import EpochSystem
@testable import EpochVolume
import Support
import Testing

@Suite struct KeySourceTests {
    @Test func fileSourceReadsRawAndHexKeys() throws {
        let dir = TemporaryDirectory()
        let raw = try SecureRandom.bytes(32)
        let hexKey = try SecureRandom.bytes(32)
        dir.write(raw, to: "1.key")
        dir.write(Array(("  " + toHex(hexKey).uppercased() + "\r\n").utf8), to: "2.key")
        let source = try KeySourceSpec.parse("file:\(dir.path)/%d.key")
        #expect(try source.wrappingKey(epoch: 1, derivation: .direct).withUnsafeBytes { Array($0) } == raw)
        #expect(try source.wrappingKey(epoch: 2, derivation: .direct).withUnsafeBytes { Array($0) } == hexKey)
        #expect(try source.candidateEpochs() == [2, 1])
    }

    @Test func fileSourceErrorsAreClear() throws {
        let dir = TemporaryDirectory()
        dir.write([1, 2, 3], to: "1.key")
        dir.write(Array(String(repeating: "zz", count: 32).utf8), to: "2.key")
        let source = try FileKeySource(template: dir.path + "/%d.key")
        #expect { try source.wrappingKey(epoch: 1, derivation: .direct) } throws: { error in
            (error as? KeySourceError).map { "\($0)".contains("epoch 1") && "\($0)".contains("3 bytes") } ?? false
        }
        #expect(throws: KeySourceError.badKeyMaterial(epoch: 2, reason: "not a hex digit in the key")) {
            try source.wrappingKey(epoch: 2, derivation: .direct)
        }
        #expect { try source.wrappingKey(epoch: 3, derivation: .direct) } throws: { error in
            guard case let KeySourceError.unavailable(epoch, reason) = error else { return false }
            return epoch == 3 && reason.contains("3.key") && reason.contains("No such file")
        }
        #expect(throws: KeySourceError.self) { try FileKeySource(template: dir.path + "/fixed.key") }
        #expect(throws: KeySourceError.self) { try KeySourceSpec.parse("vault:secret") }
        #expect(throws: KeySourceError.self) { try KeySourceSpec.parse("no-colon") }
    }

    /// One decoder for every key: 32 bytes as they are, else 64 hex digits in either case with
    /// whitespace around them.
    @Test func keyMaterialIsRawBytesOrHex() throws {
        let key = try SecureRandom.bytes(32)
        let decoded = { (material: [UInt8]) in try decodeKeyMaterial(SecretBytes(copying: material)).withUnsafeBytes { Array($0) } }
        #expect(try decoded(key) == key)
        #expect(try decoded(Array(toHex(key).utf8)) == key)
        #expect(try decoded(Array((" \t" + toHex(key).uppercased() + "\r\n").utf8)) == key)
        // 32 bytes that happen to be hex digits are a raw key, not half of a hex one.
        let digits = Array(String(repeating: "ab", count: 16).utf8)
        #expect(try decoded(digits) == digits)
    }

    /// Bad key material is refused by its length or as "not a hex digit", never quoted.
    @Test func badKeyMaterialIsNamedWithoutItsBytes() throws {
        let hexKey = toHex(try SecureRandom.bytes(32))
        let cases: [(String, KeyMaterialError)] = [
            ("", .wrongLength(0)), (" \n", .wrongLength(2)), (String(hexKey.dropLast()), .wrongLength(63)),
            (hexKey + "0\n", .wrongLength(66)), (hexKey.dropLast() + "g", .notHex),
            (hexKey.prefix(32) + " " + hexKey.dropFirst(33), .notHex),
        ]
        for (material, expected) in cases {
            let error = #expect(throws: KeyMaterialError.self) { try decodeKeyMaterial(SecretBytes(copying: Array(material.utf8))) }
            #expect(error == expected, "\(material.utf8.count) bytes")
            #expect(!"\(expected)".contains(hexKey.prefix(8)))
        }
    }

    /// Raft keys from a raw key file or a volume's keyring open what their key id's key sealed.
    @Test func raftKeysComeFromKeyFilesAndKeyrings() throws {
        let dir = TemporaryDirectory()
        let raw = try SecureRandom.bytes(32)
        dir.write(Array((toHex(raw) + "\n").utf8), to: "raft.key")
        dir.write(Array("not a key".utf8), to: "bad.key")
        let fromFile = RaftKeys.lookup([7: try RaftKeys.readKeyFile(dir.path + "/raft.key")])
        let sealed = try RaftEnvelope.seal([1, 2, 3], keyID: 7, raftDEK: AESGCMKey(SecretBytes(copying: raw)))
        #expect(try RaftEnvelope.open(sealed, raftDEKs: fromFile) == [1, 2, 3])
        #expect(throws: EnvelopeError.unknownKeyID(8)) { try fromFile(8) }
        #expect(throws: KeyMaterialError.wrongLength(9)) { try RaftKeys.readKeyFile(dir.path + "/bad.key") }
        #expect(throws: SystemError.self) { try RaftKeys.readKeyFile(dir.path + "/missing.key") }

        let keyring = try Keyring.create(epoch: 1).adding(epoch: 2)
        let fromKeyring = RaftKeys.lookup(in: keyring)
        let raftDEK = try #require(try keyring.keys(for: 1).raftDEK)
        let sealedAtOne = try RaftEnvelope.seal([4], keyID: 1, raftDEK: AESGCMKey(raftDEK))
        #expect(try RaftEnvelope.open(sealedAtOne, raftDEKs: fromKeyring) == [4])
        #expect(throws: EnvelopeError.unknownKeyID(3)) { try fromKeyring(3) }
    }

    @Test func relativeTemplatesBecomeAbsolute() throws {
        let source = try KeySourceSpec.parse("file:keys/%d.key", workingDirectory: "/srv/vol")
        #expect(source.spec == "file:/srv/vol/keys/%d.key")
    }

    @Test func commandSourceGetsTheEpochAsLastArgument() throws {
        let dir = TemporaryDirectory()
        let key = try SecureRandom.bytes(32)
        dir.write(Array(toHex(key).utf8), to: "7.hex")
        // CMD keeps its own arguments; the epoch comes after them.
        let source = try KeySourceSpec.parse("command:f() { test $# -eq 2 && test \"$1\" = vol-a && cat \(dir.path)/$2.hex; }; f vol-a")
        #expect(try source.wrappingKey(epoch: 7, derivation: .direct).withUnsafeBytes { Array($0) } == key)
        #expect(throws: KeySourceError.self) { try source.wrappingKey(epoch: 8, derivation: .direct) } // no 8.hex
    }

    @Test func commandFailureAndTimeoutAreErrors() throws {
        let failing = CommandKeySource(command: "echo nope >&2; exit 3 #")
        #expect(throws: KeySourceError.unavailable(epoch: 1, reason: "command 'echo nope >&2; exit 3 #' exited with status 3")) {
            try failing.wrappingKey(epoch: 1, derivation: .direct)
        }
        let slow = CommandKeySource(command: "sleep 30; echo", timeout: 0.5)
        let start = Subprocess.monotonicSeconds()
        #expect(throws: KeySourceError.timedOut(epoch: 4, seconds: 0.5)) { try slow.wrappingKey(epoch: 4, derivation: .direct) }
        #expect(Subprocess.monotonicSeconds() - start < 10, "the timed-out command was not killed")
        let short = CommandKeySource(command: "printf abc #")
        #expect(throws: KeySourceError.self) { try short.wrappingKey(epoch: 1, derivation: .direct) }
    }

    @Test func passphraseSourceUsesScryptWithTheStoredSalt() throws {
        let dir = TemporaryDirectory()
        dir.write(Array("correct horse\n".utf8), to: "pass")
        let cheap = ScryptParameters(log2N: 10, r: 8, p: 1)
        let source = try PassphraseKeySource(path: dir.path + "/pass", parameters: cheap)
        let first = try source.keyDerivationForNewEpoch()
        let second = try source.keyDerivationForNewEpoch()
        #expect(first != second, "every new epoch draws a fresh salt")
        guard case let .scrypt(parameters, salt) = first else { Issue.record("not scrypt"); return }
        let expected = try parameters.derive(passphrase: SecretBytes(copying: Array("correct horse".utf8)), salt: salt, count: 32)
        #expect(try source.wrappingKey(epoch: 1, derivation: first).isEqual(to: expected))
        #expect(!(try source.wrappingKey(epoch: 1, derivation: second).isEqual(to: expected)))
        #expect(throws: KeySourceError.self) { try source.wrappingKey(epoch: 1, derivation: .direct) }
    }

    /// A real header file: create, rekey, reopen through a new store, as the CLI does.
    @Test func fileHeaderStoreRoundTrip() throws {
        let keys = try KeyFiles()
        let backing = TemporaryDirectory()
        let created = try HeaderJournal(store: try FileHeaderStore(creatingIn: backing.path), source: keys.source)
            .create(epoch: 2, blockSize: 8192)
        #expect(throws: SystemError.self) { try FileHeaderStore(creatingIn: backing.path) }
        let journal = HeaderJournal(store: try FileHeaderStore(backing: backing.path), source: keys.source)
        #expect(try journal.rekey(to: 3).header.sequence == 2)
        let reopened = try HeaderJournal(store: try FileHeaderStore(backing: backing.path), source: keys.source).open()
        #expect((reopened.epoch, reopened.sequence, reopened.slot.blockSize) == (3, 2, 8192))
        #expect(reopened.volumeID == created.volumeID)
        #expect(reopened.keyring.nameKey.isEqual(to: created.keyring.nameKey))
    }
}
