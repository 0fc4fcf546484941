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
}
