import Foundation
import Glibc
import Support
import Testing

/// The mount's root is the backing directory, which `init` makes as mkdir does (0777 less the
/// umask) or with `--mode` (issue 18 item 7; docs/FORMAT.md §1.3).
@Suite(.serialized) struct RootModeTests {
    /// A volume whose backing dir `init` made again through `/bin/sh -c "PREFIX epochfs init
    /// BACKING ... ARGUMENTS"` (the fixture's own init removed; an empty BACKING of mode
    /// `existing` made first when given), mounted with `options`.
    func volume(shellPrefix: String = "", initArguments: String = "", existing: mode_t? = nil,
                options: [String] = []) throws -> (MountedVolume, CommandResult) {
        let volume = try MountedVolume()
        volume.unmount()
        try FileManager.default.removeItem(atPath: volume.backing)
        if let existing {
            try FileManager.default.createDirectory(atPath: volume.backing, withIntermediateDirectories: false)
            chmod(volume.backing, existing)
        }
        let made = try run("/bin/sh", ["-c", "\(shellPrefix) '\(volume.binary)' init '\(volume.backing)' --key-source 'file:\(volume.keys)/%d.key' \(initArguments)"])
        if made.status == 0 { try volume.mount(options: options) }
        return (volume, made)
    }

    func mode(_ path: String) -> mode_t {
        var info = stat()
        return stat(path, &info) == 0 ? info.st_mode & 0o7777 : 0
    }

    @Test func theRootIsMadeAsMkdirWouldMakeIt() throws {
        for (umask, expected) in [("022", mode_t(0o755)), ("027", 0o750), ("077", 0o700)] {
            let (volume, made) = try volume(shellPrefix: "umask \(umask);")
            defer { volume.destroy() }
            #expect(made.status == 0, "\(made.stderr)")
            #expect(mode(volume.backing) == expected, "umask \(umask)")
            #expect(mode(volume.mountpoint) == expected, "umask \(umask): the mount's root")
        }
    }

    /// `--mode 1777` gives a shared root: on an allow_other mount another user creates files in it.
    @Test func modeOptionSetsTheRootExactly() throws {
        let (volume, made) = try volume(shellPrefix: "umask 077;", initArguments: "--mode 1777", options: ["allow_other"])
        defer { volume.destroy() }
        #expect(made.status == 0, "\(made.stderr)")
        #expect(mode(volume.mountpoint) == 0o1777)
        chmod(volume.root, 0o755)
        let created = try run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c",
                                                   "echo hi > '\(volume.path("by-nobody"))'"])
        #expect(created.status == 0, "\(created.stderr)")
        var info = stat()
        #expect(stat(volume.path("by-nobody"), &info) == 0 && info.st_uid == 65534)
    }

    @Test func anExistingEmptyDirectoryKeepsItsModeUnlessOneIsGiven() throws {
        let (kept, made) = try volume(existing: 0o711)
        defer { kept.destroy() }
        #expect(made.status == 0, "\(made.stderr)")
        #expect(mode(kept.mountpoint) == 0o711)
        let (given, madeGiven) = try volume(initArguments: "--mode 0750", existing: 0o711)
        defer { given.destroy() }
        #expect(madeGiven.status == 0, "\(madeGiven.stderr)")
        #expect(mode(given.mountpoint) == 0o750)
        let (_, refused) = try volume(initArguments: "--mode 8888")
        #expect(refused.status != 0 && refused.stderr.contains("--mode"), "\(refused.stderr)")
    }
}
