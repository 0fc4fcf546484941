import Foundation
import Glibc
import Support
import Testing

/// `cd ROOT; epochfs mount backing mnt`: a daemonized mount (working directory /) of relative
/// paths commits live through every route: the control file, `rekey --mount`, `retire
/// --mount`, and a raft cutover.
@Suite struct RelativePathTests {
    @Test func aDaemonizedMountOfRelativePathsCommitsLive() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        volume.unmount()
        let mounted = try runBounded([volume.binary, "mount", "backing", "mnt"], currentDirectory: volume.root, seconds: 30)
        try #require(mounted.status == 0, "\(mounted.output)")
        defer {
            _ = try? run("/bin/fusermount3", ["-u", volume.mountpoint])
            #expect(waitUntil(seconds: 15) { ownerLockIsFree(volume.backing) }, "the daemon did not exit")
        }
        #expect(volume.isMounted)

        #expect(volume.control("rekey 2") == 0, "\(String(describing: try? volume.status()["last_error"]))")
        let rekeyed = try runBounded([volume.binary, "rekey", "--mount", "mnt", "3"], currentDirectory: volume.root, seconds: 60)
        #expect(rekeyed.status == 0, "\(rekeyed.output)")
        let retired = try runBounded([volume.binary, "retire", "--mount", "mnt", "1"], currentDirectory: volume.root, seconds: 60)
        #expect(retired.status == 0, "\(retired.output)")
        #expect(volume.control("raft-cutover 100") == 0)
        let status = try volume.status()
        #expect(status["epoch"] as? Int == 3 && status["raft_cutover"] as? Int == 100, "\(status)")
        #expect((status["keyring"] as? [[String: Any]])?.first?["state"] as? String == "retired", "\(status)")
    }
}

/// Whether the lock a mount holds on `BACKING/epochfs.owner` (docs/FORMAT.md §1.6) is free,
/// i.e. its daemon has exited.
func ownerLockIsFree(_ backing: String) -> Bool {
    let fd = open(backing + "/epochfs.owner", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    return flock(fd, LOCK_EX | LOCK_NB) == 0
}
