import Foundation
import Glibc

/// What a directory tree looks like to a user: per path, type, mode, owner, size, link count,
/// content digest or symlink target. Times are left out (they differ between trees).
public struct TreeSnapshot: Equatable, CustomStringConvertible {
    public var entries: [String: String] = [:]

    public init(_ root: String) {
        walk(root, relative: "")
    }

    private mutating func walk(_ root: String, relative: String) {
        let path = relative.isEmpty ? root : root + "/" + relative
        var info = stat()
        guard lstat(path, &info) == 0 else {
            entries[relative] = "lstat errno \(errno)"
            return
        }
        var line = "mode \(String(info.st_mode, radix: 8)) uid \(info.st_uid) gid \(info.st_gid)"
        switch info.st_mode & S_IFMT {
        case S_IFDIR:
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0 != ".epochfs" }.sorted()
            line += " dir [\(names.joined(separator: ","))]"
            entries[relative] = line
            for name in names { walk(root, relative: relative.isEmpty ? name : relative + "/" + name) }
            return
        case S_IFREG:
            line += " size \(info.st_size) nlink \(info.st_nlink) content \(contentDigest(path))"
        case S_IFLNK:
            var buffer = [CChar](repeating: 0, count: 8192)
            let length = readlink(path, &buffer, buffer.count)
            line += " size \(info.st_size) -> \(length) bytes \(String(decoding: buffer.prefix(max(length, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self).hashValue)"
        default:
            line += " rdev \(info.st_rdev)"
        }
        entries[relative] = line
    }

    public var description: String { entries.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "\n") }

    /// The lines that differ, for a readable failure.
    public func difference(from other: TreeSnapshot) -> String {
        Set(entries.keys).union(other.entries.keys).sorted().compactMap { key in
            entries[key] == other.entries[key] ? nil : "\(key): \(entries[key] ?? "missing") vs \(other.entries[key] ?? "missing")"
        }.joined(separator: "\n")
    }
}

/// Whole-file content as a short digest (or the errno reading it).
public func contentDigest(_ path: String) -> String {
    guard let data = FileManager.default.contents(atPath: path) else { return "unreadable errno \(errno)" }
    var hasher = Hasher()
    hasher.combine(data)
    return "\(data.count):\(hasher.finalize())"
}
