import CLinux
import Foundation
import Glibc
import Support
import Testing

/// `epochfs fsck` and `retire` on volumes written through a real mount, with faults planted in
/// the backing directory by hand.
@Suite(.serialized) struct FsckTests {
    @Test func fsckFindsEachPlantedFaultWritesNothingAndRepairLeavesACleanVolume() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let content = (0..<20_000).map { _ in UInt8.random(in: 0...255) }
        let longName = String(repeating: "n", count: 200)
        #expect(mkdir(volume.path("d"), 0o755) == 0 && mkdir(volume.path("empty"), 0o755) == 0 && mkdir(volume.path("kept"), 0o755) == 0)
        try Data(content).write(to: URL(fileURLWithPath: volume.path("d/a")))
        try Data("hello\n".utf8).write(to: URL(fileURLWithPath: volume.path(longName)))
        try Data("inside\n".utf8).write(to: URL(fileURLWithPath: volume.path("kept/inner")))
        #expect(symlink(String(repeating: "t", count: 3500), volume.path("long-link")) == 0)
        #expect(symlink("target", volume.path("s")) == 0)
        #expect(epochfs_setxattr(volume.path("d/a"), "user.note", "value", 5, 0) == 0)
        #expect(volume.control("rekey 2") == 0) // slot B is current from here; slot A the older one
        try Data("epoch two\n".utf8).write(to: URL(fileURLWithPath: volume.path("b")))
        let shown = TreeSnapshot(volume.mountpoint)
        let innerInode = try inode(volume.path("kept/inner"))
        let backing = try BackingPaths(volume)
        let whileMounted = try volume.epochfs("fsck", volume.backing, "--repair")
        #expect(whileMounted.status == 4 && whileMounted.stderr.contains("is mounted on \(volume.mountpoint)"), "\(whileMounted.output)")
        volume.unmount()

        let clean = try volume.epochfs("fsck", volume.backing)
        #expect(clean.status == 0, "\(clean.output)")
        #expect(clean.stdout.hasSuffix("clean\n") && clean.stdout.contains("9 names"), "\(clean.stdout)")
        #expect(clean.stderr.isEmpty, "no progress bar when stderr is not a terminal")

        // The faults: a flipped byte (block 1) and two blocks swapped (2 and 3) in /d/a, a torn
        // header slot, an empty directory IV in an empty directory and in one with an entry,
        // an orphaned long-name side file and an orphaned link file, a symlink target and an
        // xattr value that do not authenticate.
        let fileA = try backing.path(of: "d/a")
        try modify(fileA) { bytes in
            bytes[dataOffset + 4130 + 100] ^= 1
            let two = Array(bytes[(dataOffset + 2 * 4130)..<(dataOffset + 3 * 4130)])
            bytes.replaceSubrange((dataOffset + 2 * 4130)..<(dataOffset + 3 * 4130), with: bytes[(dataOffset + 3 * 4130)..<(dataOffset + 4 * 4130)])
            bytes.replaceSubrange((dataOffset + 3 * 4130)..<(dataOffset + 4 * 4130), with: two)
        }
        try modify(volume.backing + "/epochfs.header") { $0[100] ^= 0xff }
        try Data().write(to: URL(fileURLWithPath: try backing.path(of: "empty") + "/epochfs.diriv"))
        try Data().write(to: URL(fileURLWithPath: try backing.path(of: "kept") + "/epochfs.diriv"))
        let orphanName = "epochfs.long." + String(repeating: "A", count: 43) + ".name"
        try Data("x".utf8).write(to: URL(fileURLWithPath: try backing.path(of: "d") + "/" + orphanName))
        try Data("y".utf8).write(to: URL(fileURLWithPath: volume.backing + "/epochfs.links/" + String(repeating: "B", count: 43)))

        let link = try backing.path(of: "s")
        var target = try FileManager.default.destinationOfSymbolicLink(atPath: link).utf8.map { $0 }
        target[30] = target[30] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(unlink(link) == 0 && symlink(String(decoding: target, as: UTF8.self), link) == 0)
        var names = [CChar](repeating: 0, count: 4096)
        let namesLength = epochfs_listxattr(fileA, &names, 4096)
        let note = try #require(String(decoding: names.prefix(max(0, namesLength)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            .split(separator: "\0").first { $0.hasPrefix("user.epochfs.") }).description
        var value = [UInt8](repeating: 0, count: 256)
        let valueLength = epochfs_getxattr(fileA, note, &value, 256)
        #expect(valueLength > 34)
        value[valueLength - 1] ^= 1
        #expect(epochfs_setxattr(fileA, note, value, UInt(valueLength), 0) == 0)

        let before = BackingState(volume.backing)
        let found = try volume.epochfs("fsck", volume.backing)
        #expect(found.status == 1, "\(found.output)")
        for line in ["/d/a: block 1: envelope under key id 1 failed authentication",
                     "/d/a: block 2: envelope under key id 1 failed authentication",
                     "/d/a: block 3: envelope under key id 1 failed authentication",
                     "backing:epochfs.header: header slot A: slot checksum does not match",
                     "/empty: directory IV: lost",
                     "/kept: directory IV: lost",
                     ": name: name does not decrypt: the directory's IV is lost",
                     "/\(orphanName): long-name side file: orphaned",
                     "backing:epochfs.links/\(String(repeating: "B", count: 43)): link file: orphaned",
                     "/s: symlink target: envelope under key id 1 failed authentication",
                     "/d/a: xattr user.note: envelope under key id 1 failed authentication",
                     // Format 5: the changed value is also a set the file's record does not bind.
                     "/d/a: attribute set: extended attributes are not the ones the file's record binds",
                     // The unmount committed the root's record, which binds both directories by their IVs.
                     "/: directory record: ", "an entry names another object than the directory's last commit found",
                     "13 problems"] {
            #expect(found.stdout.contains(line), "missing \(line) in:\n\(found.stdout)")
        }
        #expect(!found.stdout.contains("/d/a: block 0") && !found.stdout.contains("/d/a: block 4"), "\(found.stdout)")
        #expect(BackingState(volume.backing) == before, "fsck without --repair changed the backing directory")

        let json = try volume.epochfs("fsck", volume.backing, "--json")
        let report = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect(json.status == 1 && report?["clean"] as? Bool == false && (report?["problems"] as? [Any])?.count == 13, "\(json.output)")

        let repaired = try volume.epochfs("fsck", volume.backing, "--repair")
        #expect(repaired.status == 1, "\(repaired.output)")
        #expect(!repaired.stdout.contains("not repaired"), "\(repaired.stdout)")
        let again = try volume.epochfs("fsck", volume.backing)
        #expect(again.status == 0 && again.stdout.hasSuffix("clean\n"), "\(again.output)")

        // Every readable byte is where it was: /d/a has zeros only where its blocks 1-3 were,
        // and /kept/inner, whose name went with the IV, reads in /lost+found. What nothing of
        // was readable (the symlink, the attribute) is gone from the tree, kept in epochfs.lost.
        try volume.mount()
        var expected = content
        expected.replaceSubrange(4096..<(4 * 4096), with: repeatElement(0, count: 3 * 4096))
        #expect(FileManager.default.contents(atPath: volume.path("d/a")) == Data(expected))
        #expect(FileManager.default.contents(atPath: volume.path("lost+found/#\(innerInode)")) == Data("inside\n".utf8))
        #expect(epochfs_getxattr(volume.path("d/a"), "user.note", &value, 256) == -1 && errno == ENODATA)
        #expect(try FileManager.default.contentsOfDirectory(atPath: volume.backing + "/epochfs.lost").count == 3)
        var after = TreeSnapshot(volume.mountpoint)
        after.entries["d/a"] = shown.entries["d/a"]
        after.entries["kept"] = shown.entries["kept"]
        after.entries["kept/inner"] = shown.entries["kept/inner"]
        after.entries[""] = shown.entries[""]
        after.entries["s"] = shown.entries["s"]
        for key in after.entries.keys where key.hasPrefix("lost+found") { after.entries[key] = nil }
        #expect(after == shown, "differs:\n\(after.difference(from: shown))")
    }

    @Test func retireIsRefusedWhileAnythingNamesTheEpochAndAnOldBlockFailsAfterwards() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let old = (0..<10_000).map { UInt8(truncatingIfNeeded: $0) }
        try Data(old).write(to: URL(fileURLWithPath: volume.path("f")))
        #expect(symlink("target", volume.path("link")) == 0)
        #expect(epochfs_setxattr(volume.path("f"), "user.note", "value", 5, 0) == 0)
        #expect(volume.control("rekey 2") == 0)

        #expect(volume.control("retire 1") == EBUSY)
        let refusal = try #require(try volume.status()["last_error"] as? String)
        #expect(refusal.contains("5 items (3 blocks, 1 symlinks, 1 xattrs)") && refusal.contains("/f") && refusal.contains("/link"),
                "\(refusal)")
        #expect(volume.control("retire 2") == EBUSY, "the active epoch is never retired")
        #expect(volume.control("retire 7") == ENOENT)
        let unknown = try volume.epochfs("retire", "--mount", volume.mountpoint, "7")
        #expect(unknown.status == 3 && unknown.stderr.contains("not in the keyring"), "\(unknown.output)")
        let offline = try volume.epochfs("retire", volume.backing, "1")
        #expect(offline.status == 4 && offline.stderr.contains("is mounted on \(volume.mountpoint)"), "\(offline.output)")

        let backingFile = try BackingPaths(volume).path(of: "f")
        let oldCopy = try Data(contentsOf: URL(fileURLWithPath: backingFile))
        // Rewritten under epoch 2, nothing names epoch 1 any more.
        try Data(old).write(to: URL(fileURLWithPath: volume.path("f")))
        #expect(unlink(volume.path("link")) == 0 && symlink("target", volume.path("link")) == 0)
        #expect(epochfs_setxattr(volume.path("f"), "user.note", "value", 5, 0) == 0)
        #expect(volume.control("retire 1") == 0, "\(String(describing: try? volume.status()))")
        let keyring = try volume.status()["keyring"] as? [[String: Any]]
        #expect(keyring?.map { $0["state"] as? String } == ["retired", "active"])
        #expect(FileManager.default.contents(atPath: volume.path("f")) == Data(old))
        volume.unmount()

        // An old copy put back fails closed: EIO through the mount, "retired key id" in fsck.
        try oldCopy.write(to: URL(fileURLWithPath: backingFile))
        let fsck = try volume.epochfs("fsck", volume.backing)
        #expect(fsck.status == 1 && fsck.stdout.contains("/f: block 0: retired key id 1"), "\(fsck.output)")
        // Through the mount the copy is older than the file the root's record (committed at the
        // unmount) binds: EIO at the lookup already, before any block is read; -f: the line goes
        // to stderr.
        try volume.mount()
        #expect(open(volume.path("f"), O_RDONLY) == -1 && errno == EIO)
        #expect(volume.mountLog.contains("operation=lookup") && volume.mountLog.contains("older than the")
                    && volume.mountLog.contains("entry=f ") && volume.mountLog.contains("directory=/ "), "\(volume.mountLog)")
    }
}

extension FsckTests {
    /// Blocks under an epoch an older, restored header does not hold may still open with a
    /// header backup: --repair touches neither them nor the header.
    @Test func repairLeavesItemsOfAnEpochTheKeyringLacks() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        let backup = volume.root + "/header.backup"
        #expect(try volume.epochfs("header", "backup", volume.backing, backup).status == 0)
        #expect(volume.control("rekey 2") == 0)
        try Data("epoch two\n".utf8).write(to: URL(fileURLWithPath: volume.path("f")))
        volume.unmount()
        #expect(try volume.epochfs("header", "restore", volume.backing, backup, "--yes").status == 0)
        try modify(volume.backing + "/epochfs.header") { $0[65_536 + 100] = 0xff } // slot B, never written, now damaged
        let file = try #require(try FileManager.default.contentsOfDirectory(atPath: volume.backing).first { !$0.hasPrefix("epochfs.") })
        let stored = try Data(contentsOf: URL(fileURLWithPath: volume.backing + "/" + file))
        let header = try Data(contentsOf: URL(fileURLWithPath: volume.backing + "/epochfs.header"))

        let repaired = try volume.epochfs("fsck", volume.backing, "--repair")
        #expect(repaired.status == 1 && repaired.stdout.contains("/f: block 0: key id 2 is not in the keyring"), "\(repaired.output)")
        #expect(repaired.stdout.contains("not repaired: /f: block 0"), "\(repaired.stdout)")
        #expect(repaired.stdout.contains("not repaired: backing:epochfs.header: header slot B"), "\(repaired.stdout)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: volume.backing + "/" + file)) == stored)
        #expect(try Data(contentsOf: URL(fileURLWithPath: volume.backing + "/epochfs.header")) == header)
    }
}

/// Finds the backing object of a plaintext path by its inode number, which the mount reports
/// unchanged (docs/FORMAT.md §1.2). Built while mounted.
private struct BackingPaths {
    private var byInode: [UInt64: String] = [:]
    private var inodes: [String: UInt64] = [:]

    init(_ volume: MountedVolume) throws {
        let backing = volume.backing
        for case let relative as String in FileManager.default.enumerator(atPath: backing)! {
            byInode[try inode(backing + "/" + relative)] = backing + "/" + relative
        }
        for case let relative as String in FileManager.default.enumerator(atPath: volume.mountpoint)! {
            inodes[relative] = try inode(volume.path(relative))
        }
    }

    func path(of plaintext: String) throws -> String {
        try #require(inodes[plaintext].flatMap { byInode[$0] })
    }
}

private func inode(_ path: String) throws -> UInt64 {
    var info = stat()
    guard lstat(path, &info) == 0 else { throw TestFailure("lstat \(path): errno \(errno)") }
    return UInt64(info.st_ino)
}

private func modify(_ path: String, _ change: (inout [UInt8]) -> Void) throws {
    var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    change(&bytes)
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// Every backing path with its bytes (or target) and modification time: what "writes
/// nothing" compares.
private struct BackingState: Equatable {
    var entries: [String: String] = [:]

    init(_ root: String) {
        for case let relative as String in FileManager.default.enumerator(atPath: root)! {
            var info = stat()
            lstat(root + "/" + relative, &info)
            let mtime = "\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
            let isDirectory = info.st_mode & S_IFMT == S_IFDIR
            entries[relative] = "\(info.st_mode) \(mtime) " + (isDirectory ? "" : contentDigest(root + "/" + relative))
        }
    }
}
