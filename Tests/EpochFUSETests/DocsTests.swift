import Foundation
import Glibc
import Support
import Testing

/// What the docs show, run as written so that it cannot drift: README's quick start (marked
/// `<!-- docs-test: quick-start -->`) and docs/MOUNTING.md's fstab line (`docs-test: fstab`),
/// with the example paths (/srv/vol, /mnt/vol, /etc/epochfs/keys) moved into a scratch
/// directory; and every command and option `--help` shows, found in the docs.
@Suite(.serialized) struct DocsTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let binary = productPath("epochfs")

    /// The lines of the fenced block that follows `<!-- docs-test: NAME -->` in `file`.
    static func block(_ name: String, in file: String) throws -> [String] {
        let lines = try String(contentsOfFile: packageRoot + "/" + file, encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let marker = lines.firstIndex(of: "<!-- docs-test: \(name) -->"), marker + 2 < lines.count, lines[marker + 1].hasPrefix("```"),
              let end = lines[(marker + 2)...].firstIndex(of: "```")
        else { throw TestFailure("\(file) has no fenced block after <!-- docs-test: \(name) -->") }
        return Array(lines[(marker + 2)..<end])
    }

    /// The docs' example paths, moved under `scratch`; refuses text that would still touch the host.
    static func localized(_ text: String, in scratch: TemporaryDirectory) throws -> String {
        let moved = text.replacingOccurrences(of: "/etc/epochfs/keys", with: scratch.file("keys"))
            .replacingOccurrences(of: "/srv/vol", with: scratch.file("backing"))
            .replacingOccurrences(of: "/mnt/vol", with: scratch.file("mnt"))
        // A path of the host's own that is left (one that starts a word, an option value or a redirection).
        if let left = moved.firstMatch(of: /(?:^|[\s=:>])(\/(?:etc|srv|mnt)\/\S*)/) {
            throw TestFailure("the docs' commands name \(left.1), which the test does not move:\n\(text)")
        }
        return moved
    }

    static func isMounted(_ mountpoint: String) -> Bool {
        let table = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        return table.split(separator: "\n").contains { $0.split(separator: " ").dropFirst(4).first.map(String.init) == mountpoint }
    }

    /// Unmounts `mountpoint` if the docs' commands left it mounted, and waits for the daemon
    /// they started (named in the volume's owner file) to exit.
    static func cleanUp(backing: String, mountpoint: String) {
        if isMounted(mountpoint) { _ = try? run("/bin/fusermount3", ["-u", "-z", mountpoint]) }
        guard let owner = try? String(contentsOfFile: backing + "/epochfs.owner", encoding: .utf8),
              let pid = pid_t(owner.split(separator: "\n").first ?? ""), owner.contains("mount ")
        else { return }
        if !waitUntil(seconds: 10, { kill(pid, 0) != 0 }) {
            // Ours only if it still serves this backing directory.
            let command = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
            if command.contains(backing) { kill(pid, SIGKILL) }
        }
    }

    @Test func quickStartRunsAsWritten() throws {
        try requireTools([("/bin/fusermount3", "fuse3"), ("/usr/bin/openssl", "openssl")])
        let scratch = TemporaryDirectory()
        let backing = scratch.file("backing"), mountpoint = scratch.file("mnt")
        defer { Self.cleanUp(backing: backing, mountpoint: mountpoint) }
        let script = try Self.localized(Self.block("quick-start", in: "README.md").joined(separator: "\n"), in: scratch)
        let binaries = URL(fileURLWithPath: Self.binary).deletingLastPathComponent().path
        let ran = try runBounded(["/bin/bash", "-euo", "pipefail", "-c", script],
                                 environment: ["PATH": "\(binaries):/usr/sbin:/usr/bin:/sbin:/bin"], seconds: 60)
        #expect(ran.status == 0, "the quick start failed:\n\(script)\n\(ran.output)")
        let lines = ran.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        #expect(lines.contains("hello"), "the file written through the mount did not read back:\n\(ran.output)")
        #expect(lines.contains("epoch 2"), "status did not show the live rekey:\n\(ran.output)")
        #expect(waitUntil(seconds: 10) { !Self.isMounted(mountpoint) }, "the quick start left the volume mounted")

        // Offline, the volume is as the quick start left it: rekeyed to 2, the file in it.
        let info = try run(Self.binary, ["info", backing, "--json"])
        let header = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any]
        #expect(header?["epoch"] as? Int == 2, "\(info.output)")
        let exported = scratch.file("exported")
        #expect(try run(Self.binary, ["export", backing, "/hello.txt", exported]).status == 0)
        #expect(try String(contentsOfFile: exported, encoding: .utf8) == "hello\n")
    }

    /// The fstab line through mount(8) and the mount helper, in a mount namespace of the test's
    /// own whose /usr/sbin is overlaid with the helper: nothing is installed on the host.
    @Test func fstabLineMountsThroughMount8() throws {
        try requireTools([("/bin/fusermount3", "fuse3"), ("/usr/bin/unshare", "util-linux")])
        let scratch = TemporaryDirectory()
        let backing = scratch.file("backing"), mountpoint = scratch.file("mnt"), keys = scratch.file("keys")
        defer { Self.cleanUp(backing: backing, mountpoint: mountpoint) }
        let lines = try Self.block("fstab", in: "docs/MOUNTING.md").filter { !$0.hasPrefix("#") && !$0.isEmpty }
        try #require(lines.count == 1, "one fstab line expected: \(lines)")
        let fstab = try Self.localized(lines[0], in: scratch)
        #expect(fstab.split(separator: " ", omittingEmptySubsequences: true).count == 6, "not an fstab line: \(fstab)")

        for directory in [keys, mountpoint, scratch.file("sbin")] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        try Data((0..<32).map { _ in UInt8.random(in: 0...255) }).write(to: URL(fileURLWithPath: keys + "/1.key"))
        let created = try run(Self.binary, ["init", backing, "--key-source", "file:\(keys)/%d.key"])
        #expect(created.status == 0, "\(created.output)")
        try (fstab + "\n").write(toFile: scratch.file("fstab"), atomically: true, encoding: .utf8)
        let helper = Self.packageRoot + "/mount-helpers/mount.epochfs"
        #expect(symlink(helper, scratch.file("sbin") + "/mount.fuse.epochfs") == 0)

        let script = """
            set -eu
            mount -t overlay overlay -o lowerdir="$1:/usr/sbin" /usr/sbin
            trap 'umount -l "$3" 2>/dev/null || true' EXIT
            mount --fstab "$2" "$3"
            echo "through fstab" > "$3/f"
            cat "$3/f"
            grep " $3 " /proc/self/mountinfo
            umount "$3"
            """
        let mounted = try runBounded(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/bash", "-c", script, "fstab-test",
                                      scratch.file("sbin"), scratch.file("fstab"), mountpoint],
                                     environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "EPOCHFS_BIN": Self.binary], seconds: 60)
        #expect(mounted.status == 0, "the fstab line did not mount:\n\(fstab)\n\(mounted.output)")
        let output = mounted.stdout.split(separator: "\n").map(String.init)
        #expect(output.first == "through fstab", "\(mounted.output)")
        let entry = output.dropFirst().first ?? ""
        #expect(entry.contains(" fuse.epochfs epochfs:\(backing) "), "\(entry)")
        // The options of the line reached the mount: allow_other (with default_permissions), and suid, dev as root.
        #expect(entry.contains("allow_other") && entry.contains("default_permissions"), "\(entry)")
        #expect(!entry.contains("nosuid") && !entry.contains("nodev"), "\(entry)")
        // What was written through the fstab mount is in the volume.
        let exported = scratch.file("exported")
        #expect(try run(Self.binary, ["export", backing, "/f", exported]).status == 0)
        #expect(try String(contentsOfFile: exported, encoding: .utf8) == "through fstab\n")
    }

    /// Every command `epochfs help` lists, and every option each one's help shows, is in
    /// README.md or docs/*.md.
    @Test func everyCommandAndOptionInHelpIsInTheDocs() throws {
        let docsDirectory = Self.packageRoot + "/docs"
        let pages = try ["README.md"].map { Self.packageRoot + "/" + $0 }
            + FileManager.default.contentsOfDirectory(atPath: docsDirectory).filter { $0.hasSuffix(".md") }.map { docsDirectory + "/" + $0 }
        let docs = try pages.map { try String(contentsOfFile: $0, encoding: .utf8) }.joined(separator: "\n")
        var missing: [String] = []
        var commands: [[String]] = [[]]
        var checked = 0
        while let command = commands.popLast(), command.count < 3 {
            let help = try run(Self.binary, ["help"] + command)
            #expect(help.status == 0, "epochfs help \(command.joined(separator: " ")): \(help.output)")
            let (subcommands, options) = Self.parseHelp(help.stdout)
            commands += subcommands.map { command + [$0] }
            if !command.isEmpty && !docs.contains("epochfs " + command.joined(separator: " ")) {
                missing.append("the command epochfs \(command.joined(separator: " "))")
            }
            for option in options where !docs.contains(option) {
                missing.append("\(option) of epochfs \(command.joined(separator: " "))")
            }
            checked += options.count
        }
        #expect(checked > 40, "too few options found in --help: is its layout still parsed?")
        #expect(missing == [], "in --help but not in README.md or docs/: \(missing)")
    }

    /// The subcommands and the options (`--name`, `-x`) an ArgumentParser help text shows.
    static func parseHelp(_ text: String) -> (subcommands: [String], options: [String]) {
        var subcommands: [String] = [], options: [String] = []
        var section = ""
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if let first = line.first, first != " " { section = String(line); continue }
            let words = line.split(separator: " ")
            guard let word = words.first else { continue }
            // "  name   abstract" or "  name (default)   abstract"; not the closing "See 'epochfs help ...'".
            if section.hasPrefix("SUBCOMMANDS") && line.hasPrefix("  ") && !line.hasPrefix("   ") && word != "help"
                && word.allSatisfy({ $0.isLowercase || $0 == "-" }) {
                subcommands.append(String(word))
            } else if section.hasPrefix("OPTIONS") && line.hasPrefix("  -") {
                for name in words.prefix(2) where name.hasPrefix("-") {
                    let option = name.trimmingCharacters(in: CharacterSet(charactersIn: ","))
                    if option != "-h" && option != "--help" { options.append(option) }
                }
            }
        }
        return (subcommands, options)
    }
}
