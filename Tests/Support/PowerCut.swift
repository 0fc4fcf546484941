import CLinux
import EpochIO
import Foundation
import Glibc

/// The states a power cut can leave of a directory, built from a recording of every call made
/// on it (`RecordingIO`), the way ext4 (data=ordered) keeps them:
/// - a file's data (writes, truncates, fallocates) is durable up to its last completed fsync or
///   fdatasync (or a syncfs);
/// - directory operations (create, mkdir, symlink, link, rename, unlink) are journaled in
///   order, and every fsync, fdatasync or syncfs commits all of them made so far;
/// - what is not durable at the cut is dropped, or kept; or one of its writes is torn at each
///   512-byte boundary it spans (its first sectors reached the disk, the rest did not), with the
///   rest of it kept, or dropped; or one of its writes is dropped and the rest kept.
public struct PowerCut {
    /// A directory tree as files, directories and symlinks by path relative to its root, and
    /// the `user.` extended attributes of its files and directories.
    public struct Tree: Equatable {
        public var files: [String: [UInt8]] = [:]
        public var directories: Set<String> = []
        public var symlinks: [String: String] = [:]
        /// By path, then attribute name.
        public var attributes: [String: [String: [UInt8]]] = [:]

        public init() {}

        /// What `root` holds now.
        public init(reading root: String) throws {
            let manager = FileManager.default
            for relative in try manager.subpathsOfDirectory(atPath: root) {
                let path = root + "/" + relative
                let attributes = try manager.attributesOfItem(atPath: path)
                switch attributes[.type] as? FileAttributeType {
                case .typeDirectory?: directories.insert(relative)
                case .typeSymbolicLink?: symlinks[relative] = try manager.destinationOfSymbolicLink(atPath: path)
                default: files[relative] = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
                }
                if attributes[.type] as? FileAttributeType != .typeSymbolicLink, case let found = userAttributes(of: path), !found.isEmpty {
                    self.attributes[relative] = found
                }
            }
        }

        private func userAttributes(of path: String) -> [String: [UInt8]] {
            var names = [CChar](repeating: 0, count: 65_536)
            let length = epochfs_listxattr(path, &names, UInt(names.count))
            guard length > 0 else { return [:] }
            var found: [String: [UInt8]] = [:]
            for raw in names.prefix(length).split(separator: 0) {
                let name = String(decoding: raw.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                guard name.hasPrefix("user.") else { continue }
                var value = [UInt8](repeating: 0, count: 65_536)
                let count = epochfs_getxattr(path, name, &value, UInt(value.count))
                if count >= 0 { found[name] = Array(value.prefix(count)) }
            }
            return found
        }

        /// Writes this tree into the empty or missing directory `root`.
        public func write(to root: String) throws {
            let manager = FileManager.default
            try manager.createDirectory(atPath: root, withIntermediateDirectories: true)
            for directory in directories.sorted(by: { $0.count < $1.count }) {
                try manager.createDirectory(atPath: root + "/" + directory, withIntermediateDirectories: true)
            }
            for (path, bytes) in files { try Data(bytes).write(to: URL(fileURLWithPath: root + "/" + path)) }
            for (path, target) in symlinks { try manager.createSymbolicLink(atPath: root + "/" + path, withDestinationPath: target) }
            for (path, values) in attributes {
                for (name, value) in values where epochfs_setxattr(root + "/" + path, name, value, UInt(value.count), 0) != 0 {
                    throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
                }
            }
        }
    }

    /// One state: how it came about, and the tree.
    public struct State {
        public let crashPoint: Int
        public let label: String
        public let tree: Tree
        /// For a torn write: the file (its paths) and the byte range the write was for.
        public var torn: (paths: [String], range: Range<Int>)? = nil
    }

    /// What a recorded call did to the tree, files named by inode number (so that writes
    /// through a descriptor follow renames).
    private enum Effect {
        case create(path: String, inode: Int)
        case link(path: String, inode: Int)
        case mkdir(path: String)
        case symlink(path: String, target: String)
        case remove(path: String)
        case rename(from: String, to: String)
        case write(inode: Int, offset: Int, bytes: [UInt8])
        case truncate(inode: Int, size: Int)
        /// fallocate: `zeroes` the range (PUNCH_HOLE, ZERO_RANGE), `grows` the file to its end
        /// (mode 0, ZERO_RANGE without KEEP_SIZE).
        case allocate(inode: Int, offset: Int, length: Int, zeroes: Bool, grows: Bool)
        /// setxattr (`value`) or removexattr (nil) of a file (`inode`) or directory (`path`).
        case attribute(inode: Int?, path: String, name: String, value: [UInt8]?)
        /// fsync or fdatasync of a file (its data durable; directory operations committed), of a
        /// directory (inode nil: a commit), or syncfs (`everything`).
        case sync(inode: Int?, everything: Bool)

        var isData: Bool {
            switch self {
            case .write, .truncate, .allocate: true
            default: false
            }
        }
    }

    private let initial: Tree
    private let initialInodes: [String: Int]
    /// Per recorded call, its effect (nil when it changed nothing).
    private let effects: [Effect?]

    /// `root` is the directory the calls were made on (as /proc/self/fd names it), `initial`
    /// what it held before them.
    public init(root: String, initial: Tree, calls: [RecordingIO.Call]) {
        let prefix = (URL(fileURLWithPath: root).resolvingSymlinksInPath().path) + "/"
        self.initial = initial
        var inodes: [String: Int] = [:]
        for (number, path) in initial.files.keys.sorted().enumerated() { inodes[path] = number }
        initialInodes = inodes
        var nextInode = inodes.count
        var effects: [Effect?] = []
        func relative(_ path: String?) -> String? {
            guard let path, path.hasPrefix(prefix), !path.hasSuffix(" (deleted)") else { return nil }
            return String(path.dropFirst(prefix.count))
        }
        for call in calls {
            guard case let .success(result) = call.result else {
                effects.append(nil)
                continue
            }
            guard let path = relative(call.path) else {
                // The root itself: an fsync of it commits, a syncfs through it makes all durable.
                let syncs = [RecordingIO.Kind.fsync, .fdatasync, .syncfs].contains(call.kind)
                effects.append(syncs ? .sync(inode: nil, everything: call.kind == .syncfs) : nil)
                continue
            }
            var effect: Effect?
            switch call.kind {
            case .open:
                let flags = Int32(call.length ?? 0)
                if inodes[path] == nil, flags & O_CREAT != 0, flags & O_DIRECTORY == 0 {
                    inodes[path] = nextInode
                    effect = .create(path: path, inode: nextInode)
                    nextInode += 1
                } else if flags & O_TRUNC != 0, let inode = inodes[path] {
                    effect = .truncate(inode: inode, size: 0)
                }
            case .pwrite:
                if let inode = inodes[path], let bytes = call.bytes {
                    effect = .write(inode: inode, offset: call.offset ?? 0, bytes: Array(bytes.prefix(result)))
                }
            case .ftruncate:
                if let inode = inodes[path] { effect = .truncate(inode: inode, size: call.length ?? 0) }
            case .fallocate:
                let mode = Int32(call.other?.dropFirst("mode ".count) ?? "0") ?? 0
                let keepSize = mode & 0x01 != 0, zeroes = mode & (0x02 | 0x10) != 0 // KEEP_SIZE; PUNCH_HOLE, ZERO_RANGE
                if let inode = inodes[path], zeroes || !keepSize {
                    effect = .allocate(inode: inode, offset: call.offset ?? 0, length: call.length ?? 0, zeroes: zeroes, grows: !keepSize)
                }
            case .fsync, .fdatasync:
                effect = .sync(inode: inodes[path], everything: false)
            case .syncfs:
                effect = .sync(inode: nil, everything: true)
            case .setxattr, .removexattr:
                if let name = call.other {
                    effect = .attribute(inode: inodes[path], path: path, name: name, value: call.kind == .setxattr ? call.bytes ?? [] : nil)
                }
            case .mkdirat:
                effect = .mkdir(path: path)
            case .symlinkat:
                effect = .symlink(path: path, target: call.other ?? "")
            case .linkat:
                if let target = relative(call.other), let inode = inodes[path] {
                    inodes[target] = inode
                    effect = .link(path: target, inode: inode)
                }
            case .unlinkat:
                inodes = inodes.removing(path)
                effect = .remove(path: path)
            case .renameat:
                if let target = relative(call.other) {
                    inodes = inodes.renaming(path, to: target)
                    effect = .rename(from: path, to: target)
                }
            default:
                break
            }
            effects.append(effect)
        }
        self.effects = effects
    }

    public var callCount: Int { effects.count }

    /// Every state a cut after the first `crashPoint` calls can leave.
    public func states(at crashPoint: Int) -> [State] {
        let happened = Array(effects.prefix(crashPoint).enumerated())
        var lastCommit = -1, lastSyncAll = -1
        var lastDataSync: [Int: Int] = [:]
        for (index, effect) in happened {
            guard case let .sync(inode, everything)? = effect else { continue }
            lastCommit = index
            if everything { lastSyncAll = index }
            if let inode { lastDataSync[inode] = index }
        }
        func durable(_ index: Int, _ effect: Effect) -> Bool {
            switch effect {
            case let .write(inode, _, _), let .truncate(inode, _), let .allocate(inode, _, _, _, _):
                index <= max(lastDataSync[inode] ?? -1, lastSyncAll)
            default:
                index <= lastCommit
            }
        }
        let pending = happened.compactMap { index, effect in effect.flatMap { durable(index, $0) ? nil : (index, $0) } }
        var states = [State(crashPoint: crashPoint, label: "pending dropped", tree: replay(happened.filter { index, effect in
            effect.map { durable(index, $0) } ?? false
        }))]
        guard !pending.isEmpty else { return states }
        states.append(State(crashPoint: crashPoint, label: "pending kept", tree: replay(happened)))
        // Each pending write torn at each 512-byte boundary inside it, the other pending changes
        // all kept, or all dropped; or dropped alone (the disk need not keep them in order).
        let pendingIndices = Set(pending.map(\.0))
        for (tornIndex, torn) in pending {
            guard case let .write(inode, offset, bytes) = torn else { continue }
            if pending.count > 1 {
                states.append(State(crashPoint: crashPoint, label: "write \(tornIndex) dropped, others kept",
                                    tree: replay(happened.filter { $0.0 != tornIndex }), torn: (names(of: inode, in: happened), offset..<(offset + bytes.count))))
            }
            let paths = names(of: inode, in: happened)
            var boundary = (offset / 512 + 1) * 512
            while boundary < offset + bytes.count {
                let tornWrite = Effect.write(inode: inode, offset: offset, bytes: Array(bytes.prefix(boundary - offset)))
                for othersKept in [true, false] {
                    let effects = happened.compactMap { index, effect -> (Int, Effect?)? in
                        if index == tornIndex { return (index, tornWrite) }
                        return othersKept || !pendingIndices.contains(index) ? (index, effect) : nil
                    }
                    states.append(State(crashPoint: crashPoint, label: "write \(tornIndex) torn at \(boundary), others \(othersKept ? "kept" : "dropped")",
                                        tree: replay(effects), torn: (paths, offset..<(offset + bytes.count))))
                }
                boundary += 512
            }
        }
        return states
    }

    /// Every state of every crash point.
    public var allStates: [State] { (0...callCount).flatMap { states(at: $0) } }

    /// The paths `inode` has after `applied`.
    private func names(of inode: Int, in applied: [(Int, Effect?)]) -> [String] {
        var names = initialInodes
        for (_, effect) in applied {
            switch effect {
            case let .create(path, number)?, let .link(path, number)?: names[path] = number
            case let .remove(path)?: names = names.removing(path)
            case let .rename(from, to)?: names = names.renaming(from, to: to)
            default: break
            }
        }
        return names.filter { $0.value == inode }.map(\.key)
    }

    private func replay(_ applied: [(Int, Effect?)]) -> Tree {
        var tree = initial
        var names = initialInodes
        var contents: [Int: [UInt8]] = [:]
        // Attributes of files by inode (they follow renames and links), of directories by path.
        var fileAttributes: [Int: [String: [UInt8]]] = [:]
        for (path, inode) in initialInodes {
            contents[inode] = initial.files[path]
            fileAttributes[inode] = initial.attributes[path]
        }
        tree.attributes = initial.attributes.filter { initial.directories.contains($0.key) }
        for (_, effect) in applied {
            switch effect {
            case nil, .sync?:
                break
            case let .attribute(inode, path, name, value)?:
                if let inode {
                    fileAttributes[inode, default: [:]][name] = value
                } else if tree.directories.contains(path) {
                    tree.attributes[path, default: [:]][name] = value
                }
            case let .create(path, inode)?:
                names[path] = inode
                contents[inode] = contents[inode] ?? []
            case let .link(path, inode)?:
                names[path] = inode
            case let .mkdir(path)?:
                tree.directories.insert(path)
            case let .symlink(path, target)?:
                tree.symlinks[path] = target
            case let .remove(path)?:
                names = names.removing(path)
                tree.directories = tree.directories.filter { !isAt($0, orUnder: path) }
                tree.symlinks = tree.symlinks.removing(path)
                tree.attributes = tree.attributes.removing(path)
            case let .rename(from, to)? where from != to:
                names = names.renaming(from, to: to)
                // A directory moved over an (empty) directory replaces it.
                if tree.directories.contains(from) { tree.directories = tree.directories.filter { !isAt($0, orUnder: to) } }
                if tree.directories.contains(from) { tree.attributes = tree.attributes.removing(to) }
                tree.directories = Set(tree.directories.map { renamed($0, from: from, to: to) })
                tree.symlinks = tree.symlinks.renaming(from, to: to)
                tree.attributes = tree.attributes.renaming(from, to: to)
            case .rename?:
                break // a name renamed to itself
            case let .write(inode, offset, bytes)?:
                var content = contents[inode] ?? []
                if content.count < offset + bytes.count { content += [UInt8](repeating: 0, count: offset + bytes.count - content.count) }
                content.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
                contents[inode] = content
            case let .truncate(inode, size)?:
                var content = contents[inode] ?? []
                if content.count > size { content.removeLast(content.count - size) } else { content += [UInt8](repeating: 0, count: size - content.count) }
                contents[inode] = content
            case let .allocate(inode, offset, length, zeroes, grows)?:
                var content = contents[inode] ?? []
                if zeroes, offset < content.count {
                    let end = min(offset + length, content.count)
                    content.replaceSubrange(offset..<end, with: repeatElement(0, count: end - offset))
                }
                if grows, content.count < offset + length { content += [UInt8](repeating: 0, count: offset + length - content.count) }
                contents[inode] = content
            }
        }
        tree.files = Dictionary(uniqueKeysWithValues: names.compactMap { path, inode in contents[inode].map { (path, $0) } })
        for (path, inode) in names where contents[inode] != nil {
            if let values = fileAttributes[inode], !values.isEmpty { tree.attributes[path] = values }
        }
        tree.attributes = tree.attributes.filter { !$0.value.isEmpty }
        return tree
    }
}

/// Whether `name` is `path` or lies under it.
private func isAt(_ name: String, orUnder path: String) -> Bool { name == path || name.hasPrefix(path + "/") }

/// `name` after `from` was renamed to `to`.
private func renamed(_ name: String, from: String, to: String) -> String {
    isAt(name, orUnder: from) ? to + name.dropFirst(from.count) : name
}

private extension Dictionary where Key == String {
    /// Without `path` and everything under it.
    func removing(_ path: String) -> Self { filter { !isAt($0.key, orUnder: path) } }

    /// After a rename of `from` to `to`, which replaces whatever was at `to`.
    func renaming(_ from: String, to: String) -> Self {
        guard from != to else { return self } // rename(2) of a name to itself does nothing
        return Dictionary(uniqueKeysWithValues: removing(to).map { (renamed($0.key, from: from, to: to), $0.value) })
    }
}
