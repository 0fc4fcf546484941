import Foundation
import Support
import Testing

/// Real programs on the mount: tar, git and sqlite3 (Debian packages).
@Suite(.serialized) struct WorkloadTests {
    func shell(_ script: String, in directory: String) throws -> CommandResult {
        try run("/bin/sh", ["-c", script], currentDirectory: directory)
    }

    /// Every node the kernel holds keeps a descriptor in the daemon: started with a soft limit
    /// of 256 open files (a hard one above), it raises its own and serves 1,000 files at once.
    @Test func aTreeOfMoreFilesThanTheSoftLimitOfDescriptors() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        volume.unmount()
        try volume.mount(launcher: ["/usr/bin/prlimit", "--nofile=256:4096"])
        try FileManager.default.createDirectory(atPath: volume.path("many"), withIntermediateDirectories: false)
        let failed = (0..<1000).filter { index in
            let fd = open(volume.path("many/\(index)"), O_WRONLY | O_CREAT, 0o644)
            defer { if fd >= 0 { close(fd) } }
            return fd < 0
        }
        #expect(failed.isEmpty, "\(failed.count) creates failed: \(volume.mountLog.suffix(500))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: volume.path("many")).count == 1000)
        let limits = try String(contentsOfFile: "/proc/\(try #require(volume.daemonPID))/limits", encoding: .utf8)
        #expect(limits.split(separator: "\n").contains {
            $0.hasPrefix("Max open files") && $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).prefix(2) == ["4096", "4096"]
        }, "\(limits)")
    }

    @Test func untarGitAndSqlite() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        // A source tree: OpenSSL's headers, packed and unpacked on the mount, compared byte for byte.
        let tarball = volume.root + "/src.tar"
        #expect(try shell("tar -cf \(tarball) -C /usr/include openssl", in: volume.root).status == 0)
        let untar = try shell("tar -xf \(tarball)", in: volume.mountpoint)
        #expect(untar.status == 0, "\(untar.stderr)")
        let diff = try shell("diff -r /usr/include/openssl openssl", in: volume.mountpoint)
        #expect(diff.status == 0, "\(diff.stdout.prefix(500))")

        let git = try shell("""
            set -e
            git init -q repo && cd repo
            git config user.email t@example.invalid && git config user.name test
            cp -r ../openssl . && git add -A && git commit -qm first
            echo change >> openssl/ssl.h && git commit -qam second
            git gc -q && git fsck --full --strict && git log --oneline | wc -l
            """, in: volume.mountpoint)
        #expect(git.status == 0, "\(git.stderr)")
        #expect(git.stdout.trimmingCharacters(in: .whitespacesAndNewlines).hasSuffix("2"))

        var sql = "PRAGMA journal_mode=WAL;\nCREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);\n"
        for index in 0..<3000 { sql += "BEGIN; INSERT INTO t(v) VALUES('value \(index) \(String(repeating: "x", count: index % 300))'); COMMIT;\n" }
        sql += "DELETE FROM t WHERE id % 3 = 0;\nVACUUM;\nPRAGMA integrity_check;\nSELECT count(*), sum(length(v)) FROM t;\n"
        try sql.write(toFile: volume.root + "/load.sql", atomically: true, encoding: .utf8)
        let sqlite = try shell("sqlite3 db.sqlite < \(volume.root)/load.sql", in: volume.mountpoint)
        #expect(sqlite.status == 0, "\(sqlite.stderr)")
        let lines = sqlite.stdout.split(separator: "\n")
        #expect(lines.contains("ok"))
        #expect(lines.last?.hasPrefix("2000|") == true, "\(lines.last ?? "")")

        // All of it survives a remount.
        volume.unmount()
        try volume.mount()
        #expect(try shell("diff -r /usr/include/openssl openssl && cd repo && git fsck --full --no-progress", in: volume.mountpoint).status == 0)
        #expect(try shell("sqlite3 db.sqlite 'PRAGMA integrity_check; SELECT count(*) FROM t;'", in: volume.mountpoint).stdout == "ok\n2000\n")
    }
}
