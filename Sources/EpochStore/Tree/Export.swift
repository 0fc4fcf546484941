import CLinux
import EpochIO
import Glibc

/// `epochfs export`: the plaintext of a file or tree of a volume, decrypted offline through
/// the same `BackingTree` the mount serves, into a plain directory, with what `cp -a` keeps:
/// hard links, modes, owners (where the caller may set them), access and modification times,
/// `user.` xattrs, fifos, sockets and device nodes.
public struct Export {
    /// How far an export got; handed to the progress callback as it goes.
    public struct Progress: Sendable {
        public var files = 0
        public var directories = 0
        public var symlinks = 0
        /// Names made as hard links of a file exported before.
        public var hardLinks = 0
        public var bytes = 0
        /// Byte ranges of files that did not authenticate and were written as zeros
        /// (`skipBad` only), by plaintext path.
        public var skipped: [(path: String, range: Range<Int>)] = []
    }

    /// Why an export stopped.
    public struct Failure: Error, CustomStringConvertible {
        public let path: String
        public let reason: String

        public var description: String { "\(path): \(reason)" }
    }

    private static let chunk = 1 << 20

    let tree: BackingTree
    let skipBad: Bool
    let report: (Progress) -> Void
    private var progress = Progress()
    /// Where each file of several links was exported first: its other names link to it.
    private var exportedFiles: [BackingNode.Identity: String] = [:]

    /// Exports the plaintext `path` ("/" for the whole volume) of `tree` to `destination`,
    /// which must not exist yet. Fails on the first block that does not authenticate unless
    /// `skipBad`; then such blocks are written as zeros and listed in the result.
    public static func run(_ tree: BackingTree, path: String, to destination: String, skipBad: Bool,
                           report: @escaping (Progress) -> Void = { _ in }) throws -> Progress {
        var export = Export(tree: tree, skipBad: skipBad, report: report)
        var node = tree.root
        for component in path.split(separator: "/") {
            node = try export.attempt(path) {
                do {
                    return try tree.lookup(Array(component.utf8), in: node).0
                } catch let error as SystemError {
                    // Its own message names the encrypted backing name; the operator gave this one.
                    throw Failure(path: path, reason: String(cString: strerror(error.errno)))
                }
            }
        }
        try export.copy(node, at: path.isEmpty ? "/" : path, to: destination)
        return export.progress
    }

    private mutating func copy(_ node: BackingNode, at path: String, to destination: String) throws {
        let attributes = try attempt(path) { try tree.attributes(of: node) }
        switch attributes.st_mode & S_IFMT {
        case S_IFDIR:
            try system(path) { mkdir(destination, 0o700) }
            let handle = try attempt(path) { try tree.openDirectory(node) }
            defer { tree.close(handle) }
            let entries = try attempt(path) { try tree.listing(of: node, through: handle) }
            for entry in entries {
                let name = String(decoding: entry.name, as: UTF8.self)
                let (child, _) = try attempt(path + "/" + name) { try tree.locate(backingName: entry.backingName, in: node) }
                try copy(child, at: (path == "/" ? "" : path) + "/" + name, to: destination + "/" + name)
            }
            progress.directories += 1
        case S_IFREG:
            if attributes.st_nlink > 1, let first = exportedFiles[node.identity] {
                try system(path) { link(first, destination) }
                progress.hardLinks += 1
                return // one inode: its metadata is set already
            }
            try copyFile(node, size: Int(attributes.st_size), at: path, to: destination)
            if attributes.st_nlink > 1 { exportedFiles[node.identity] = destination }
            progress.files += 1
        case S_IFLNK:
            let target = try attempt(path) { try tree.readlink(node) }
            try system(path) { symlink(String(decoding: target, as: UTF8.self), destination) }
            progress.symlinks += 1
        default:
            // Fifos, sockets and devices hold no data; the node itself is made again.
            try system(path) { mknod(destination, attributes.st_mode, attributes.st_rdev) }
        }
        try keepMetadata(of: node, attributes, at: path, on: destination)
        report(progress)
    }

    /// What `cp -a` keeps: xattrs, then the owner (which may clear set-ID bits), then the mode,
    /// then the times (last: the rest changes the ctime only, but a directory's mtime moved as
    /// its entries were made). An owner the caller may not give is left, as cp does.
    private func keepMetadata(of node: BackingNode, _ attributes: stat, at path: String, on destination: String) throws {
        let isSymlink = attributes.st_mode & S_IFMT == S_IFLNK
        if !isSymlink {
            for name in try attempt(path) { try tree.listXattrs(node) } {
                let value = try attempt(path + " xattr " + name) { try tree.getXattr(node, name: name) }
                try system(path) { epochfs_setxattr(destination, name, value, UInt(value.count), 0) }
            }
        }
        if lchown(destination, attributes.st_uid, attributes.st_gid) != 0, errno != EPERM {
            throw Failure(path: path, reason: "chown: " + String(cString: strerror(errno)))
        }
        if !isSymlink { try system(path) { chmod(destination, attributes.st_mode & 0o7777) } }
        let times = [attributes.st_atim, attributes.st_mtim]
        try system(path) { utimensat(AT_FDCWD, destination, times, AT_SYMLINK_NOFOLLOW) }
    }

    private mutating func copyFile(_ node: BackingNode, size: Int, at path: String, to destination: String) throws {
        // The destination is no backing file, but the same calls write it.
        let plain = SystemIO()
        let output = try attempt(destination) {
            try plain.open(destination, in: .currentDirectory, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o600)
        }
        defer { plain.close(output) }
        let handle = try attempt(path) { try tree.open(node, flags: O_RDONLY, caller: 0) }
        defer { tree.close(handle) }
        var offset = 0
        while offset < size {
            let count = min(Self.chunk, size - offset)
            let bytes = try readOrSkip(node, handle, at: offset, count: count, path: path)
            try attempt(destination) { try plain.pwriteFully(output, bytes, at: offset) }
            offset += count
            progress.bytes += count
            if offset < size { report(progress) }
        }
    }

    /// `count` plaintext bytes at `offset`; with `skipBad`, blocks that do not authenticate
    /// come back as zeros and are noted.
    private mutating func readOrSkip(_ node: BackingNode, _ handle: FileDescriptor, at offset: Int, count: Int,
                                     path: String) throws -> [UInt8] {
        do {
            return try tree.read(node, through: handle, offset: offset, count: count) { Array($0) }
        } catch is ContentError where skipBad {
            // Some block in it does not authenticate: read block by block to find which.
        } catch {
            throw Failure(path: path, reason: "\(error)")
        }
        let blockSize = tree.volume.keys.blockSize
        var bytes: [UInt8] = []
        for start in stride(from: offset, to: offset + count, by: blockSize) {
            let length = min(blockSize, offset + count - start)
            do {
                bytes += try tree.read(node, through: handle, offset: start, count: length) { Array($0) }
            } catch is ContentError {
                bytes += [UInt8](repeating: 0, count: length)
                if let last = progress.skipped.last, last.path == path, last.range.upperBound == start {
                    progress.skipped[progress.skipped.count - 1].range = last.range.lowerBound..<(start + length)
                } else {
                    progress.skipped.append((path, start..<(start + length)))
                }
            }
        }
        return bytes
    }

    private func attempt<R>(_ path: String, _ body: () throws -> R) throws -> R {
        do {
            return try body()
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure(path: path, reason: "\(error)")
        }
    }

    private func system(_ path: String, _ call: () -> Int32) throws {
        guard call() == 0 else { throw Failure(path: path, reason: String(cString: strerror(errno))) }
    }
}
