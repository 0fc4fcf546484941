import CLinux
import Foundation
import Glibc
import Support
import Testing

/// renameat2(RENAME_WHITEOUT), what overlayfs does to a lower entry it renames (issue 18
/// item 2, xfstests generic/013): the whiteout left under the old name is an entry like any
/// other, also under a name long enough to need a side file (docs/FORMAT.md §5.3): it is
/// listed, can be removed, and its directory can then be removed.
@Suite(.serialized) struct WhiteoutTests {
    func outcome(_ result: Int32) -> String { result == 0 ? "ok" : "errno \(errno)" }

    func steps(in root: String) -> [String] {
        let directory = root + "/d"
        let long = String(repeating: "w", count: 200)
        var result: [String] = []
        result.append("mkdir " + outcome(mkdir(directory, 0o755)))
        result.append("create " + outcome(close(open(directory + "/" + long, O_CREAT | O_WRONLY, 0o644))))
        result.append("create short " + outcome(close(open(directory + "/short-source", O_CREAT | O_WRONLY, 0o644))))
        result.append("whiteout long " + outcome(epochfs_renameat2(AT_FDCWD, directory + "/" + long, AT_FDCWD, directory + "/moved",
                                                                   epochfs_RENAME_WHITEOUT)))
        result.append("whiteout onto long " + outcome(epochfs_renameat2(AT_FDCWD, directory + "/short-source", AT_FDCWD,
                                                                        directory + "/" + String(repeating: "x", count: 220),
                                                                        epochfs_RENAME_WHITEOUT)))
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
        result.append("listed " + names.map { $0.count > 20 ? "\($0.first!)×\($0.count)" : $0 }.joined(separator: " "))
        var info = stat()
        let isWhiteout = lstat(directory + "/" + long, &info) == 0 && info.st_mode & S_IFMT == S_IFCHR && info.st_rdev == 0
        result.append("whiteout is a 0/0 character device: \(isWhiteout)")
        for name in [long, "moved", "short-source", String(repeating: "x", count: 220)] {
            result.append("unlink \(name.prefix(8)) " + outcome(unlink(directory + "/" + name)))
        }
        result.append("rmdir " + outcome(rmdir(directory)))
        return result
    }

    @Test func aWhiteoutUnderALongNameIsListedAndRemovable() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let plain = volume.root + "/plain"
        try FileManager.default.createDirectory(atPath: plain, withIntermediateDirectories: true)
        let onExt4 = steps(in: plain)
        let onMount = steps(in: volume.mountpoint)
        #expect(onMount == onExt4, "ext4:\n\(onExt4.joined(separator: "\n"))\nepochfs:\n\(onMount.joined(separator: "\n"))")
        #expect(onExt4.last == "rmdir ok")
        // Nothing of it is left in the backing dir but the root's own files.
        let left = try FileManager.default.contentsOfDirectory(atPath: volume.backing).filter { !$0.hasPrefix("epochfs.") }
        #expect(left.isEmpty, "\(left)")
    }
}
