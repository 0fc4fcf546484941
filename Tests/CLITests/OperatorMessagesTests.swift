import Foundation
import Support
import Testing

/// What an operator sees at the edges: the version, no command, a directory that is not a
/// volume, a plaintext path that is not there, an epoch that is not a number or not in the
/// keyring, an option that does not apply.
@Suite struct OperatorMessagesTests {
    @Test func versionAndNoCommand() throws {
        let cli = try CLI()
        defer { cli.remove() }
        let version = try cli("--version")
        #expect(version.status == 0 && version.stdout.hasPrefix("epochfs 0.") && version.stdout.contains("writes volume format 5"),
                "\(version.output)")
        let nothing = try cli()
        #expect(nothing.status == 64 && nothing.stderr.contains("USAGE") && nothing.stdout.isEmpty, "\(nothing.output)")
    }

    @Test func messagesNameWhatTheOperatorGave() throws {
        let cli = try CLI()
        defer { cli.remove() }
        try FileManager.default.createDirectory(atPath: cli.directory + "/plain", withIntermediateDirectories: false)
        let notVolume = try cli("info", "plain")
        #expect(notVolume.status == 1 && notVolume.stderr.contains("plain is not an epochfs volume"), "\(notVolume.output)")

        #expect(try cli("init", "vol", "--key-source", "file:keys/%d.key").status == 0)
        let missing = try cli("export", "vol", "/missing", "out")
        #expect(missing.status == 1 && missing.stderr == "epochfs: /missing: No such file or directory\n", "\(missing.output)")
        #expect(!FileManager.default.fileExists(atPath: cli.directory + "/out"))

        let word = try cli("rekey", "vol", "abc")
        #expect(word.status == 64 && word.stderr.contains("EPOCH must be a number") && word.stderr.contains("'abc'"), "\(word.output)")
        let json = try cli("rekey", "--mount", cli.directory + "/nowhere", "--json", "5")
        #expect(json.status == 64 && json.stderr.contains("--json is for an offline rekey"), "\(json.output)")

        let unknown = try cli("retire", "vol", "7")
        #expect(unknown.status == 3 && unknown.stderr.contains("epoch 7 is not in the keyring"), "\(unknown.output)")
        #expect(try cli.info()["sequence"] as? Int == 1, "nothing written")
    }
}
