import CLinux
import Foundation
import Glibc
import Support
import Testing

/// Extended attributes changed in the backing dir between two mounts (format 5, docs/FORMAT.md
/// §5.5): an older value put back, a value copied from another object, an attribute removed or
/// added. Each reads as EIO, never as the other value, and fsck reports it; the untouched copy
/// reads as written, and `fsck --repair` binds what it finds.
@Suite(.serialized) struct AttributeTamperTests {
    enum Mutation: CaseIterable {
        case olderValueOfAFile, valueOfAnotherFile, removedFromAFile, addedToAFile, olderValueOfADirectory
    }

    /// What the mount holds after the workload, by path then attribute name.
    static let written: [String: [String: String]] = [
        "big": ["user.note": "second value"],
        "small": ["user.note": "the small file's value", "user.other": "another one"],
        "dir": ["user.tag": "second tag"],
    ]

    @Test func changedAttributesReadEIO() throws {
        let scratch = TemporaryDirectory()
        let volume = try MountedVolume(in: scratch, name: "volume")
        defer { volume.destroy() }
        for (name, size) in [("big", 3 * 4096), ("small", 100)] {
            let fd = open(volume.path(name), O_RDWR | O_CREAT, 0o644)
            #expect([UInt8](repeating: 7, count: size).withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } == size)
            #expect(fsync(fd) == 0 && close(fd) == 0)
        }
        #expect(mkdir(volume.path("dir"), 0o755) == 0)
        // First values, each made durable (an fsync of its object); then the backing values kept.
        set(volume.path("big"), "user.note", "first value")
        set(volume.path("dir"), "user.tag", "first tag")
        for name in ["big", "dir"] { syncObject(volume.path(name)) }
        let big = try #require(backingFiles(volume).first), directory = try backingDirectory(volume)
        let olderBig = try #require(backingAttributes(big).first), olderDirectory = try #require(backingAttributes(directory).first)
        for (path, attributes) in Self.written {
            for (name, value) in attributes { set(volume.path(path), name, value) }
            syncObject(volume.path(path))
        }
        volume.unmount()
        let small = backingFiles(volume)[1]
        let pristine = scratch.path + "/pristine"
        #expect(try run("/bin/cp", ["-a", volume.backing, pristine]).status == 0)
        #expect(try readAll(volume) == Self.written.mapValues { $0.mapValues { .value($0) } }, "the untouched volume")

        for mutation in Mutation.allCases {
            _ = try run("/bin/rm", ["-rf", volume.backing])
            #expect(try run("/bin/cp", ["-a", pristine, volume.backing]).status == 0)
            let (object, changed): (String, String) = switch mutation {
            case .olderValueOfAFile: (big, "big")
            case .valueOfAnotherFile: (big, "big")
            case .removedFromAFile: (small, "small")
            case .addedToAFile: (big, "big")
            case .olderValueOfADirectory: (directory, "dir")
            }
            let current = try backingAttributes(object)
            switch mutation {
            case .olderValueOfAFile:
                #expect(olderBig.name == current[0].name && olderBig.value != current[0].value)
                setBacking(object, olderBig)
            case .valueOfAnotherFile:
                // The small file's value of the same name, stored under the same backing name.
                let other = try backingAttributes(small).first { $0.name == current[0].name }
                setBacking(object, (current[0].name, try #require(other).value))
            case .removedFromAFile:
                #expect(epochfs_removexattr(object, current[0].name) == 0)
            case .addedToAFile:
                for attribute in try backingAttributes(small) where attribute.name != current[0].name { setBacking(object, attribute) }
            case .olderValueOfADirectory:
                #expect(olderDirectory.name == current[0].name && olderDirectory.value != current[0].value)
                setBacking(object, olderDirectory)
            }
            let found = try readAll(volume)
            #expect(found[changed]!.values.allSatisfy { $0 == .ioError } && found[changed]!["(list)"] == .ioError,
                    "\(mutation): \(found[changed]!)")
            for (path, values) in found where path != changed {
                #expect(values == Self.written[path]!.mapValues { .value($0) }, "\(mutation): \(path) untouched")
            }
            let fsck = try volume.epochfs("fsck", volume.backing)
            #expect(fsck.status == 1 && fsck.stdout.contains("attribute set"), "\(mutation): \(fsck.stdout)")
        }

        // After a deliberate restore, --repair binds what it finds and says so.
        let repair = try volume.epochfs("fsck", "--repair", volume.backing)
        #expect(repair.stdout.contains("bound the attributes it holds now"), "\(repair.stdout)")
        #expect(try volume.epochfs("fsck", volume.backing).status == 0)
        #expect(try readAll(volume)["dir"] == ["user.tag": .value("first tag")])
    }

    enum Read: Equatable { case value(String), ioError, other(Int32) }

    /// Every attribute of `written` as a fresh mount reads it, and each listing as a pseudo-attribute.
    func readAll(_ volume: MountedVolume) throws -> [String: [String: Read]] {
        try volume.mount()
        defer { volume.unmount() }
        var found: [String: [String: Read]] = [:]
        for (path, attributes) in Self.written {
            for name in attributes.keys {
                var value = [UInt8](repeating: 0, count: 256)
                let length = epochfs_getxattr(volume.path(path), name, &value, UInt(value.count))
                found[path, default: [:]][name] = length >= 0 ? .value(String(decoding: value.prefix(length), as: UTF8.self))
                    : errno == EIO ? .ioError : .other(errno)
            }
            var names = [CChar](repeating: 0, count: 4096)
            if epochfs_listxattr(volume.path(path), &names, UInt(names.count)) < 0 {
                found[path, default: [:]]["(list)"] = errno == EIO ? .ioError : .other(errno)
            }
        }
        return found
    }

    func set(_ path: String, _ name: String, _ value: String) {
        #expect(epochfs_setxattr(path, name, value, UInt(value.utf8.count), 0) == 0, "setxattr \(path) \(name): \(errno)")
    }

    func syncObject(_ path: String) {
        let fd = open(path, O_RDONLY)
        #expect(fd >= 0 && fsync(fd) == 0)
        close(fd)
    }

    /// The one backing directory that is not the root.
    func backingDirectory(_ volume: MountedVolume) throws -> String {
        let names = try FileManager.default.contentsOfDirectory(atPath: volume.backing).filter { name in
            var info = stat()
            return !name.hasPrefix("epochfs.") && lstat(volume.backing + "/" + name, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
        }
        try #require(names.count == 1)
        return volume.backing + "/" + names[0]
    }

    /// epochfs's stored attributes of the backing object at `path`, sorted by name.
    func backingAttributes(_ path: String) throws -> [(name: String, value: [UInt8])] {
        var names = [CChar](repeating: 0, count: 4096)
        let length = epochfs_listxattr(path, &names, UInt(names.count))
        try #require(length >= 0)
        return names.prefix(length).split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            .filter { $0.hasPrefix("user.epochfs.") }.sorted().map { name in
                var value = [UInt8](repeating: 0, count: 4096)
                let count = epochfs_getxattr(path, name, &value, UInt(value.count))
                return (name, Array(value.prefix(max(0, count))))
            }
    }

    func setBacking(_ path: String, _ attribute: (name: String, value: [UInt8])) {
        #expect(epochfs_setxattr(path, attribute.name, attribute.value, UInt(attribute.value.count), 0) == 0)
    }
}
