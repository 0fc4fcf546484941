import EpochCrypto
import EpochFormat
@testable import EpochHeader
@testable import EpochVolume
import Foundation
import Support
import Testing

/// Raft DEKs shared by a cluster (docs/FORMAT.md §3.7), through the key sources and the header
/// journal that `init` and both rekeys use. The WAL written and read across members is in
/// `EpochWALTests/ClusterWALTests`.
@Suite struct ClusterKeysTests {
    static let clusterID = try! ClusterID("5f0c8a2e-4b1d-4c3e-9a7f-1e2d3c4b5a69")

    static func secret(_ bytes: [UInt8]) -> SecretBytes { SecretBytes(copying: bytes) }
    static func bytes(_ secret: SecretBytes?) -> [UInt8]? { secret?.withUnsafeBytes { Array($0) } }
    static func raftDEKs(_ header: VolumeHeader) -> [[UInt8]?] { header.keyring.epochs.map { bytes($0.raftDEK) } }

    /// A volume in memory at epoch 1, rekeyed to 2.
    static func member(_ source: any KeySource, clusterID: ClusterID? = Self.clusterID) throws -> (HeaderJournal, VolumeHeader) {
        let journal = HeaderJournal(store: FaultyHeaderStore(), source: source)
        _ = try journal.create(epoch: 1, blockSize: 4096, clusterID: clusterID)
        return (journal, try journal.rekey(to: 2).header)
    }

    /// Key files: each epoch's raft DEK is HKDF of that epoch's key file, on every member, and
    /// survives reopening; the other keys stay each volume's own.
    @Test func keyFileMembersDeriveTheSameRaftDEKs() throws {
        let keys = try KeyFiles()
        let (journal, first) = try Self.member(keys.source)
        let (_, second) = try Self.member(keys.source)
        let expected = try [1, 2].map { epoch in
            Self.bytes(try Self.clusterID.raftDEK(clusterSecret: Self.secret(keys.keys[epoch]!), epoch: epoch))
        }
        #expect(Self.raftDEKs(first) == expected)
        #expect(Self.raftDEKs(second) == expected)
        #expect(expected[0] != expected[1])
        #expect(!first.keyring.active.storageDEK!.isEqual(to: second.keyring.active.storageDEK!))
        #expect(!first.keyring.nameKey.isEqual(to: second.keyring.nameKey))
        let reopened = try journal.open()
        #expect(reopened.keyring.clusterID == Self.clusterID)
        #expect(Self.raftDEKs(reopened) == expected)
    }

    /// Without a cluster id, as before: version 1 keyring, random raft DEKs that two volumes with
    /// the same key source do not share.
    @Test func withoutAClusterIDRaftDEKsStayRandom() throws {
        let keys = try KeyFiles()
        let (_, first) = try Self.member(keys.source, clusterID: nil)
        let (_, second) = try Self.member(keys.source, clusterID: nil)
        #expect(first.keyring.clusterID == nil)
        #expect(Self.bytes(first.keyring.encoded())?.first == Keyring.formatVersion)
        #expect(Self.raftDEKs(first)[1] != Self.raftDEKs(second)[1])
        let derived = try Self.clusterID.raftDEK(clusterSecret: Self.secret(keys.keys[2]!), epoch: 2)
        #expect(Self.raftDEKs(first)[1] != Self.bytes(derived))
    }

    /// Passphrases: the slots' random salts make the members' wrapping keys differ, while the
    /// cluster secret (scrypt with the cluster's salt) and so the raft DEKs agree.
    @Test func passphraseMembersAgreeDespiteTheirOwnSalts() throws {
        let directory = TemporaryDirectory()
        directory.write(Array("correct horse\n".utf8), to: "pass")
        let cheap = ScryptParameters(log2N: 10, r: 8, p: 1)
        let source = try PassphraseKeySource(path: directory.path + "/pass", parameters: cheap)
        let (_, first) = try Self.member(source)
        let (_, second) = try Self.member(source)
        #expect(first.slot.keyDerivation != second.slot.keyDerivation)
        let passphrase = Self.secret(Array("correct horse".utf8))
        let clusterSecret = try cheap.derive(passphrase: passphrase, salt: Self.clusterID.passphraseSalt, count: 32)
        let expected = try [1, 2].map { Self.bytes(try Self.clusterID.raftDEK(clusterSecret: clusterSecret, epoch: $0)) }
        #expect(Self.raftDEKs(first) == expected)
        #expect(Self.raftDEKs(second) == expected)
    }

    /// docs/FORMAT.md §10.14, kdf = 1: the cluster secret the key source yields for the standard
    /// scrypt cost, whatever the slot's salt.
    @Test func passphraseClusterSecretMatchesTheVector() throws {
        let directory = TemporaryDirectory()
        directory.write(Array("correct horse\n".utf8), to: "pass")
        let source = try PassphraseKeySource(path: directory.path + "/pass")
        let secrets = try source.epochSecrets(epoch: 7, derivation: try source.keyDerivationForNewEpoch(), clusterID: Self.clusterID)
        #expect(Self.bytes(secrets.clusterSecret) == hex("604c75d6cba3dc5e7ba5032e9cc1067bc9b8c9088d15925b16985d6e78e2665e"))
        let raftDEK = try Self.clusterID.raftDEK(clusterSecret: secrets.clusterSecret!, epoch: 7)
        #expect(Self.bytes(raftDEK) == hex("424ca4d5da31fdb531dd4d84c2e73076bca6e9b28fa0dd3a7c2aeb21323d12f5"))
        #expect(try source.epochSecrets(epoch: 7, derivation: try source.keyDerivationForNewEpoch(), clusterID: nil).clusterSecret == nil)
    }

    /// `info --json` and the status file name the cluster; a volume without one shows no key.
    @Test func statusShowsTheClusterID() throws {
        let keys = try KeyFiles()
        let (_, member) = try Self.member(keys.source)
        let json = String(decoding: try JSONEncoder().encode(VolumeStatus(member)), as: UTF8.self)
        #expect(json.contains(#""cluster_id":"5f0c8a2e-4b1d-4c3e-9a7f-1e2d3c4b5a69""#))
        let (_, plain) = try Self.member(keys.source, clusterID: nil)
        #expect(!String(decoding: try JSONEncoder().encode(VolumeStatus(plain)), as: UTF8.self).contains("cluster_id"))
    }
}
