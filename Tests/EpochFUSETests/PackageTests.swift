import Foundation
import Glibc
import Support
import Testing

/// The .deb scripts/package-deb.sh builds (scripts/test.sh builds it before the tests): it
/// installs into a scratch root with dpkg, holds what a host needs, and its own mount helper
/// mounts a volume through `mount -t fuse.epochfs`. Nothing is installed on this machine: the
/// mount runs in a mount namespace of its own whose /usr/bin and /usr/sbin are overlaid with
/// the scratch root's.
@Suite(.serialized) struct PackageTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// The version this build prints, which the package must carry.
    func builtVersion() throws -> (line: String, version: String) {
        let line = try run(productPath("epochfs"), ["--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        return (line, String(try #require(line.split(separator: " ").dropFirst().first)))
    }

    @Test func installsIntoAScratchRootAndMountsThroughItsHelper() throws {
        try requireTools([("/usr/bin/dpkg-deb", "dpkg"), ("/usr/bin/unshare", "util-linux")])
        let (versionLine, version) = try builtVersion()
        let architecture = try run("/usr/bin/dpkg", ["--print-architecture"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let deb = ProcessInfo.processInfo.environment["EPOCHFS_DEB"]
            ?? "\(Self.packageRoot)/.build/deb/epochfs_\(version)_\(architecture).deb"
        guard access(deb, R_OK) == 0 else { throw TestFailure("\(deb) is missing: build it with scripts/package-deb.sh") }

        let fields = try run("/usr/bin/dpkg-deb", ["--field", deb, "Package", "Version", "Depends"]).stdout
        #expect(fields.contains("Package: epochfs\n") && fields.contains("Version: \(version)\n"), "\(fields)")
        #expect(fields.contains("fuse3") && fields.contains("libfuse3-3") && fields.contains("libssl3"), "\(fields)")

        let scratch = TemporaryDirectory()
        let root = scratch.file("root")
        for directory in ["info", "updates", "triggers"] {
            try FileManager.default.createDirectory(atPath: "\(root)/var/lib/dpkg/\(directory)", withIntermediateDirectories: true)
        }
        for file in ["status", "available"] { _ = FileManager.default.createFile(atPath: "\(root)/var/lib/dpkg/\(file)", contents: nil) }
        // The scratch root's database knows none of the host's packages: their dependencies are the host's.
        let installed = try run("/usr/bin/dpkg", ["--root=\(root)", "--force-depends", "--install", deb])
        #expect(installed.status == 0, "\(installed.output)")
        let listed = try run("/usr/bin/dpkg", ["--root=\(root)", "--listfiles", "epochfs"]).stdout
        let expected = ["/usr/bin/epochfs", "/usr/sbin/mount.fuse.epochfs", "/usr/sbin/mount.epochfs", "/lib/systemd/system/epochfs@.service",
                        "/lib/systemd/system/epochfs-reconcile.service", "/usr/share/bash-completion/completions/epochfs",
                        "/usr/share/zsh/vendor-completions/_epochfs", "/usr/share/fish/vendor_completions.d/epochfs.fish",
                        "/usr/share/man/man1/epochfs.1.gz", "/usr/share/man/man1/epochfs.mount.1.gz", "/etc/epochfs"]
        for path in expected {
            #expect(listed.split(separator: "\n").contains(Substring(path)), "\(path) not in the package")
            #expect(access(root + path, F_OK) == 0, "\(path) not installed")
        }

        // What it installed: the same program, its helper and units naming it, completions and pages of every command.
        #expect(try run(root + "/usr/bin/epochfs", ["--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines) == versionLine)
        #expect(try String(contentsOfFile: root + "/usr/sbin/mount.fuse.epochfs", encoding: .utf8).contains("/usr/bin/epochfs"))
        #expect(access(root + "/usr/sbin/mount.fuse.epochfs", X_OK) == 0)
        for unit in ["epochfs@.service", "epochfs-reconcile.service"] {
            let text = try String(contentsOfFile: root + "/lib/systemd/system/" + unit, encoding: .utf8)
            #expect(text.contains("ExecStart=/usr/bin/epochfs ") && !text.contains("/usr/local/bin/epochfs"), "\(unit)")
        }
        let bash = try String(contentsOfFile: root + "/usr/share/bash-completion/completions/epochfs", encoding: .utf8)
        #expect(["reencrypt", "reconcile", "--prometheus", "--key-source"].allSatisfy { bash.contains($0) }, "bash completion lacks a command")
        let page = try run("/bin/sh", ["-c", "zcat \(root)/usr/share/man/man1/epochfs.status.1.gz"]).stdout
        #expect(page.contains("prometheus"), "the status page does not describe --prometheus")

        // A volume made by the installed binary, mounted by mount(8) through the installed helper.
        let keys = scratch.file("keys"), backing = scratch.file("backing"), mountpoint = scratch.file("mnt")
        try FileManager.default.createDirectory(atPath: keys, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        try Data((0..<32).map { _ in UInt8.random(in: 0...255) }).write(to: URL(fileURLWithPath: keys + "/1.key"))
        let created = try run(root + "/usr/bin/epochfs", ["init", backing, "--key-source", "file:\(keys)/%d.key"])
        #expect(created.status == 0, "\(created.output)")
        let script = """
            set -eu
            mount -t overlay overlay -o lowerdir="$1/usr/sbin:/usr/sbin" /usr/sbin
            mount -t overlay overlay -o lowerdir="$1/usr/bin:/usr/bin" /usr/bin
            trap 'umount -l "$3" 2>/dev/null || true' EXIT
            mount -t fuse.epochfs "$2" "$3" -o "keysource=file:$4/%d.key"
            echo "through the package" > "$3/f"
            cat "$3/f"
            pid=$(pgrep -f "^/usr/bin/epochfs mount $2 ")
            echo "daemon $(readlink "/proc/$pid/exe")"
            grep -c '^epochfs_requests_total' "$3/.epochfs/metrics"
            umount "$3"
            """
        let mounted = try runBounded(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/bash", "-c", script, "mount-test",
                                      root, backing, mountpoint, keys],
                                     environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"], seconds: 60)
        #expect(mounted.status == 0, "\(mounted.output)")
        let lines = mounted.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == "through the package", "\(mounted.output)")
        #expect(lines.dropFirst().first == "daemon /usr/bin/epochfs", "\(mounted.output)")
        #expect(Int(lines.dropFirst(2).first ?? "") ?? 0 > 0, "\(mounted.output)")
    }
}
