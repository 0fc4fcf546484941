import Foundation
import Glibc
import Support
import Testing

/// `-o allow_other` as root: the kernel checks permissions (default_permissions) and what
/// another user creates is theirs in the backing dir as well.
@Suite(.serialized) struct AllowOtherTests {
    func asNobody(_ script: String) throws -> CommandResult {
        try run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c", script])
    }

    @Test func otherUsersOwnWhatTheyCreateAndPermissionsHold() throws {
        let volume = try MountedVolume(mountOptions: ["allow_other"])
        defer { volume.destroy() }
        chmod(volume.backing, 0o755) // let nobody traverse to the backing files for the check below
        #expect(mkdir(volume.path("shared"), 0o777) == 0)
        #expect(chmod(volume.path("shared"), 0o1777) == 0)
        try Data("root only".utf8).write(to: URL(fileURLWithPath: volume.path("shared/secret")))
        #expect(chmod(volume.path("shared/secret"), 0o600) == 0)
        chmod(volume.mountpoint, 0o755)

        let created = try asNobody("echo mine > \(volume.path("shared/nobody.txt")) && mkdir \(volume.path("shared/nobody.d"))")
        #expect(created.status == 0, "\(created.stderr)")
        var info = stat()
        #expect(stat(volume.path("shared/nobody.txt"), &info) == 0)
        #expect((info.st_uid, info.st_gid) == (65534, 65534))
        // The backing objects belong to nobody too.
        let owners = try run("/usr/bin/find", [volume.backing, "-user", "65534", "-group", "65534"])
        #expect(owners.stdout.split(separator: "\n").count >= 2, "\(owners.stdout)")

        let denied = try asNobody("cat \(volume.path("shared/secret"))")
        #expect(denied.status != 0)
        #expect(denied.stderr.contains("Permission denied"))
        let readable = try asNobody("cat \(volume.path("shared/nobody.txt"))")
        #expect(readable.stdout == "mine\n")
    }

    /// Writes and truncates by a user without CAP_FSETID drop set-user-ID, and set-group-ID
    /// where the group may execute, as on ext4; root's writes keep them. The mount and a plain
    /// directory get the same steps and must end with the same modes.
    @Test func setIDBitsDropAsOnExt4() throws {
        let volume = try MountedVolume(mountOptions: ["allow_other"])
        defer { volume.destroy() }
        let plain = TemporaryDirectory()
        chmod(volume.mountpoint, 0o755)
        chmod(plain.path, 0o755)
        func modes(in directory: String) throws -> [String] {
            let steps: [(name: String, mode: mode_t, byNobody: String?)] = [
                ("written", 0o6775, "printf x >> FILE"),
                ("written-group-not-executable", 0o6745, "printf x >> FILE"),
                ("truncated", 0o6775, "truncate -s 1 FILE"),
                ("opened-with-trunc", 0o6775, ": > FILE"),
                ("written-by-root", 0o6775, nil),
            ]
            var result: [String] = []
            for step in steps {
                let path = directory + "/" + step.name
                try Data("data".utf8).write(to: URL(fileURLWithPath: path))
                #expect(chown(path, 65534, 65534) == 0)
                #expect(chmod(path, step.mode) == 0)
                if let command = step.byNobody {
                    let outcome = try asNobody(command.replacingOccurrences(of: "FILE", with: path))
                    #expect(outcome.status == 0, "\(step.name): \(outcome.stderr)")
                } else {
                    let fd = open(path, O_WRONLY | O_APPEND)
                    #expect(fd >= 0 && write(fd, "x", 1) == 1)
                    close(fd)
                }
                var info = stat()
                #expect(stat(path, &info) == 0)
                result.append("\(step.name) \(String(info.st_mode & 0o7777, radix: 8))")
            }
            return result
        }
        let onMount = try modes(in: volume.mountpoint)
        let onExt4 = try modes(in: plain.path)
        #expect(onMount == onExt4)
        #expect(onMount.contains("written 775") && onMount.contains("written-by-root 6775"), "\(onMount)")
    }
}
