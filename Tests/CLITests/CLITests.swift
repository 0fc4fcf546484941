import Foundation
import Support
import Testing

/// The `epochfs` binary run as a user would run it, in a scratch directory with key files.
struct CLI {
    let directory: String
    let binary = productPath("epochfs")

    init() throws {
        directory = NSTemporaryDirectory() + "epochfs-cli-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory + "/keys", withIntermediateDirectories: true)
        for epoch in 1...9 {
            let key = (0..<32).map { _ in UInt8.random(in: 0...255) }
            try Data(key).write(to: URL(fileURLWithPath: "\(directory)/keys/\(epoch).key"))
        }
    }

    @discardableResult
    func callAsFunction(_ arguments: String..., stdin: String? = nil) throws -> CommandResult {
        try run(binary, arguments, stdin: stdin, currentDirectory: directory)
    }

    func info(_ backing: String = "vol") throws -> [String: Any] {
        let result = try self("info", backing, "--json")
        #expect(result.status == 0, "info failed: \(result.stderr)")
        return try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
    }

    func headerBytes(_ backing: String = "vol") throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(backing)/epochfs.header"))
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

@Suite struct CLITests {
    @Test func initThenInfoShowsTheHeader() throws {
        let cli = try CLI()
        defer { cli.remove() }
        let created = try cli("init", "vol", "--key-source", "file:keys/%d.key", "--epoch", "3", "--block-size", "8192")
        #expect(created.status == 0, "\(created.stderr)")
        let info = try cli.info()
        #expect(info["epoch"] as? Int == 3)
        #expect(info["sequence"] as? Int == 1)
        #expect(info["block_size"] as? Int == 8192)
        #expect((info["volume_id"] as? String)?.count == 32)
        #expect(info["key_source"] as? String == "file:\(cli.directory)/keys/%d.key")
        let keyring = info["keyring"] as? [[String: Any]]
        #expect(keyring?.count == 1)
        #expect(keyring?.first?["epoch"] as? Int == 3)
        #expect(keyring?.first?["state"] as? String == "active")
        let text = try cli("info", "vol")
        #expect(text.status == 0)
        #expect(text.stdout.contains("epoch         3"))
        // No key material in any output.
        let key = try Data(contentsOf: URL(fileURLWithPath: cli.directory + "/keys/3.key"))
        let keyHex = key.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        #expect(!text.stdout.contains(keyHex) && !created.stdout.contains(keyHex))
    }

    @Test func rekeySemanticsAndExitCodes() throws {
        let cli = try CLI()
        defer { cli.remove() }
        #expect(try cli("init", "vol", "--key-source", "file:keys/%d.key").status == 0)
        let up = try cli("rekey", "vol", "4")
        #expect(up.status == 0, "\(up.stderr)")
        #expect(up.stdout.contains("from epoch 1 to 4"))
        let info = try cli.info()
        #expect(info["epoch"] as? Int == 4)
        #expect(info["sequence"] as? Int == 2)
        #expect((info["keyring"] as? [[String: Any]])?.map { $0["state"] as? String } == ["read-only", "active"])

        let before = try cli.headerBytes()
        let same = try cli("rekey", "vol", "4")
        #expect(same.status == 0)
        #expect(same.stdout.contains("nothing written"))
        #expect(try cli.headerBytes() == before, "rekey to the current epoch changed the header")

        let down = try cli("rekey", "vol", "2")
        #expect(down.status == 3)
        #expect(down.stderr.contains("epoch 2") && down.stderr.contains("epoch 4"))
        #expect(try cli.headerBytes() == before)
    }

    @Test func wrongOrMissingKeysAreKeyErrors() throws {
        let cli = try CLI()
        defer { cli.remove() }
        #expect(try cli("init", "vol", "--key-source", "file:keys/%d.key").status == 0)
        try FileManager.default.removeItem(atPath: cli.directory + "/keys/5.key")
        let missing = try cli("rekey", "vol", "5")
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("epoch 5") && missing.stderr.contains("5.key"))
        // Replace epoch 1's key: the volume must not open.
        try Data(repeating: 7, count: 32).write(to: URL(fileURLWithPath: cli.directory + "/keys/1.key"))
        let wrong = try cli("info", "vol")
        #expect(wrong.status == 2)
        #expect(wrong.stderr.contains("does not open"))
        #expect(wrong.stdout.isEmpty)
    }

    @Test func commandAndPassphraseSources() throws {
        let cli = try CLI()
        defer { cli.remove() }
        let command = "command:touch ran; f() { cat keys/$1.key; }; f"
        let byArgument = try cli("init", "cmdvol2", "--key-source", command, "--epoch", "2")
        #expect(byArgument.status == 0, "\(byArgument.stderr)")
        try FileManager.default.removeItem(atPath: cli.directory + "/ran")
        // The command remembered in the header is shown, never run by itself.
        let remembered = try cli("rekey", "cmdvol2", "3")
        #expect(remembered.status == 2)
        #expect(remembered.stderr.contains("never runs a command") && remembered.stderr.contains("--key-source"))
        #expect(!FileManager.default.fileExists(atPath: cli.directory + "/ran"))
        #expect(try cli("rekey", "cmdvol2", "3", "--key-source", command).status == 0)
        #expect(FileManager.default.fileExists(atPath: cli.directory + "/ran"))
        #expect(try cli("info", "cmdvol2", "--json", "--key-source", command).stdout.contains("\"epoch\":3"))

        let pass = try cli("init", "pvol", "--key-source", "passphrase:-", stdin: "first secret\n")
        #expect(pass.status == 0, "\(pass.stderr)")
        // Offline rekey with stdin: the current passphrase, then the new one.
        #expect(try cli("rekey", "pvol", "2", stdin: "first secret\nsecond secret\n").status == 0)
        let wrongPass = try cli("info", "pvol", stdin: "first secret\n")
        #expect(wrongPass.status == 2)
        let right = try cli("info", "pvol", "--json", stdin: "second secret\n")
        #expect(right.status == 0)
        #expect(right.stdout.contains("\"key_derivation\":\"scrypt\""))
    }

    /// As `cryptsetup luksHeaderBackup`/`luksHeaderRestore`: a backup, a rekey, then the
    /// backup restored (refused without --yes, as it undoes the rekey), never across volumes.
    @Test func headerBackupAndRestore() throws {
        let cli = try CLI()
        defer { cli.remove() }
        #expect(try cli("init", "vol", "--key-source", "file:keys/%d.key").status == 0)
        let backup = try cli("header", "backup", "vol", "vol.header")
        #expect(backup.status == 0, "\(backup.stderr)")
        #expect(backup.stdout.contains("(epoch 1, sequence 1)"))
        #expect(try cli("header", "backup", "vol", "vol.header").status == 1, "an existing file is not overwritten")
        #expect(try cli("rekey", "vol", "3").status == 0)

        let refused = try cli("header", "restore", "vol", "vol.header")
        #expect(refused.status == 3)
        #expect(refused.stderr.contains("rekey(s) from epoch 1 to 3") && refused.stderr.contains("--yes"), "\(refused.stderr)")
        #expect(try cli.info()["epoch"] as? Int == 3, "a refused restore writes nothing")
        let restored = try cli("header", "restore", "vol", "vol.header", "--yes")
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(restored.stdout.contains("undone: 1 header commit(s)"))
        #expect(try cli.info()["epoch"] as? Int == 1, "the restored header opens with the key of epoch 1")

        #expect(try cli("init", "other", "--key-source", "file:keys/%d.key").status == 0)
        #expect(try cli("header", "backup", "other", "other.header").status == 0)
        let foreign = try cli("header", "restore", "vol", "other.header", "--yes")
        #expect(foreign.status == 1)
        #expect(foreign.stderr.contains("the backing directory holds volume"))
        try Data(repeating: 1, count: 100).write(to: URL(fileURLWithPath: cli.directory + "/junk"))
        let junk = try cli("header", "restore", "vol", "junk")
        #expect(junk.status == 1 && junk.stderr.contains("not a header backup"))
        #expect(try cli.info()["epoch"] as? Int == 1)
    }

    /// `init --cluster-id` names the raft cluster (docs/FORMAT.md §3.7); `info` shows it, and
    /// a volume made without one shows none. Bad ids are usage errors that create nothing.
    @Test func clusterIDAtInit() throws {
        let cli = try CLI()
        defer { cli.remove() }
        let id = "5f0c8a2e-4b1d-4c3e-9a7f-1e2d3c4b5a69"
        let created = try cli("init", "vol", "--key-source", "file:keys/%d.key", "--cluster-id", id)
        #expect(created.status == 0, "\(created.stderr)")
        #expect(created.stdout.contains("cluster id    \(id)"))
        #expect(try cli("rekey", "vol", "2").status == 0)
        #expect(try cli.info()["cluster_id"] as? String == id)
        #expect(try cli("info", "vol").stdout.contains("cluster id    \(id)\n"))

        #expect(try cli("init", "plain", "--key-source", "file:keys/%d.key").status == 0)
        #expect(try cli.info("plain")["cluster_id"] == nil)
        #expect(try cli("info", "plain").stdout.contains("cluster id    none (random raft keys)\n"))

        // A passphrase on stdin: one line per epoch, as without a cluster id (that the cluster
        // secret comes from that same line, EtcdTests' WALCommandTests shows).
        #expect(try cli("init", "pvol", "--key-source", "passphrase:-", "--cluster-id", id, stdin: "first secret\n").status == 0)
        let rekeyed = try cli("rekey", "pvol", "2", "--json", stdin: "first secret\nsecond secret\n")
        #expect(rekeyed.status == 0, "\(rekeyed.stderr)")
        #expect(rekeyed.stdout.contains(#""cluster_id":"\#(id)""#) && rekeyed.stdout.contains(#""epoch":2"#))

        for bad in ["", "two words", String(repeating: "c", count: 65), "caf\u{e9}"] {
            let refused = try cli("init", "bad", "--key-source", "file:keys/%d.key", "--cluster-id", bad)
            #expect(refused.status == 64, "\(bad.debugDescription)")
            #expect(refused.stderr.contains("--cluster-id"), "\(refused.stderr)")
            #expect(!FileManager.default.fileExists(atPath: cli.directory + "/bad"))
        }
    }

    @Test func usageErrors() throws {
        let cli = try CLI()
        defer { cli.remove() }
        for command in ["init", "info", "rekey"] {
            let help = try cli(command, "--help")
            #expect(help.status == 0)
            #expect(help.stdout.contains("USAGE"))
        }
        #expect(try cli("init", "vol", "--key-source", "file:keys/%d.key", "--block-size", "1000").status == 64)
        #expect(try cli("init", "vol", "--key-source", "file:keys/%d.key", "--epoch", "0").status == 64)
        let bogus = try cli("init", "vol", "--key-source", "bogus")
        #expect(bogus.status == 64)
        #expect(bogus.stderr.contains("file:TEMPLATE"))
        try FileManager.default.createDirectory(atPath: cli.directory + "/full", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: cli.directory + "/full/x", contents: Data())
        let notEmpty = try cli("init", "full", "--key-source", "file:keys/%d.key")
        #expect(notEmpty.status == 1)
        #expect(notEmpty.stderr.contains("full"))
        let noVolume = try cli("info", "nowhere")
        #expect(noVolume.status == 1)
        #expect(noVolume.stderr.contains("nowhere/epochfs.header"))
    }
}
