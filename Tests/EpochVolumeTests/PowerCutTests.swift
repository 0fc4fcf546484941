import CLinux
import EpochCheck
import EpochFormat
import EpochHeader
import EpochIO
import EpochStore
import EpochVolume
import Foundation
import Glibc
import Support
import Testing

/// Workloads run through the volume's tree over the recording double; then every state a power
/// cut can leave of the backing dir (PowerCut) is opened as a volume and checked: everything
/// acknowledged as durable (by an fsync, fdatasync or fsyncdir that returned, or a rekey that
/// returned) reads back, and every directory on the way lists.
@Suite struct PowerCutTests {
    final class Run {
        let keys: KeyFiles
        let directory = TemporaryDirectory()
        let backing: String
        let io = RecordingIO()
        let initial: PowerCut.Tree
        let volume: LiveVolume
        let tree: BackingTree
        /// The plaintext files by path after each change, once the first `calls` recorded calls
        /// had been made; `durable` where a sync (or rekey) that returned acknowledged it, with
        /// the epoch a reopened volume must be at least.
        private(set) var versions: [(calls: Int, files: [String: [UInt8]], epoch: Epoch, durable: Bool)] = [(0, [:], 1, true)]

        /// Anchored (docs/FORMAT.md §3.8): the machine's anchor is kept inside the backing dir,
        /// under a name the volume ignores, so that each state a cut leaves holds both halves
        /// as the cut left them, and every state is opened anchored.
        let anchored: Bool

        init(anchored: Bool = false) throws {
            keys = try KeyFiles(epochs: 1...3)
            backing = directory.path + "/backing"
            self.anchored = anchored
            _ = try Volume.create(backing: backing, keySource: "file:\(keys.directory.path)/%d.key", epoch: 1, blockSize: 4096)
            initial = try PowerCut.Tree(reading: backing)
            volume = try LiveVolume(backing: backing, io: io, anchoring: anchored ? AnchorOptions(directory: backing + "/epochfs.machine-anchor") : nil)
            tree = try BackingTree(volume: volume)
        }

        /// A state's volume, opened as the mount would.
        func reopen(_ backing: String) throws -> LiveVolume {
            try LiveVolume(backing: backing, keySourceOverride: "file:\(keys.directory.path)/%d.key",
                           anchoring: anchored ? AnchorOptions(directory: backing + "/epochfs.machine-anchor") : nil)
        }

        /// The files after a change that no sync has acknowledged yet.
        func changed(_ files: [String: [UInt8]]) { versions.append((io.calls.count, files, volume.header.epoch, false)) }

        /// The files as a sync that just returned acknowledged them.
        func acknowledge(_ files: [String: [UInt8]]) { versions.append((io.calls.count, files, volume.header.epoch, true)) }

        /// What a cut after `calls` calls may leave: the last acknowledged version, any made since,
        /// and the one whose change was under way.
        func acceptable(after calls: Int) -> (versions: [[String: [UInt8]]], epoch: Epoch) {
            let acknowledged = versions.lastIndex { $0.durable && $0.calls <= calls }!
            let later = versions[(acknowledged + 1)...]
            let made = later.prefix { $0.calls <= calls }
            let underWay = later.dropFirst(made.count).first.map { [$0.files] } ?? []
            return ([versions[acknowledged].files] + made.map(\.files) + underWay, versions[acknowledged].epoch)
        }

        /// Writes `data` into `file` (at its end when `offset` is nil) and syncs it; `files` is
        /// what the tree holds after the write.
        func writeAndSync(_ data: [UInt8], at offset: Int?, to file: BackingNode, through handle: FileDescriptor, dataOnly: Bool,
                          making files: [String: [UInt8]]) throws {
            try data.withUnsafeBytes { try tree.write(file, through: handle, offset: offset, data: $0, caller: 0) }
            changed(files)
            try tree.sync(handle, of: file, dataOnly: dataOnly)
            acknowledge(files)
        }

        /// Checks every state, prints the counts, and expects nothing lost but, where
        /// `tornBlocksMayLose`, the blocks a torn write was rewriting in place.
        func expectNothingLost(_ workload: String, tornBlocksMayLose: Bool) throws {
            let (states, failures, tornBlockLost) = try check()
            print("power cut, \(workload): \(states) states; \(tornBlockLost) lose acknowledged bytes only in blocks a torn "
                  + "write was rewriting in place; \(failures.count) lose anything else")
            #expect(states > 100)
            #expect(failures.isEmpty, "\(failures.count) of \(states) states: \(failures.prefix(3))")
            #expect(tornBlocksMayLose || tornBlockLost == 0, "\(tornBlockLost) of \(states) states lose a torn block")
        }

        /// The backing inode number of the file or directory at `path`.
        func backingInode(_ path: String) throws -> ino_t {
            let node = try directory(path)
            return try withExtendedLifetime(node) { try io.fstat(node.fd).st_ino }
        }

        func directory(_ path: String) throws -> BackingNode {
            try path.split(separator: "/").reduce(tree.root) { try tree.lookup(Array($1.utf8), in: $0).0 }
        }

        /// Opens every state; returns how many there were, what went wrong in which, and in how
        /// many of them only the block a torn write was rewriting in place lost acknowledged
        /// bytes (docs/FORMAT.md §6, what a power cut can leave).
        func check() throws -> (states: Int, failures: [String], tornBlockLost: Int) {
            let cut = PowerCut(root: backing, initial: initial, calls: io.calls)
            let states = cut.allStates
            var failures: [String] = []
            var tornBlockLost = 0
            for state in states {
                let (candidates, epoch) = acceptable(after: state.crashPoint)
                let scratch = TemporaryDirectory()
                try state.tree.write(to: scratch.path + "/backing")
                let problems = candidates.map { verify(scratch.path + "/backing", files: $0, epoch: epoch) }
                guard !problems.contains(where: { $0 == nil }), let problem = problems.first! else { continue }
                // A write no sync acknowledged may have reached the disk for some of its blocks
                // and not others: each block as in one of the versions will do.
                if verifyBlockwise(scratch.path + "/backing", versions: candidates, epoch: epoch) == nil { continue }
                // Every block but the ones the torn write was rewriting must still read back.
                let spared = state.torn.map { torn in
                    candidates.map { verify(scratch.path + "/backing", files: $0, epoch: epoch, sparing: torn.range) }
                }
                if let spared, spared.contains(where: { $0 == nil }) {
                    tornBlockLost += 1
                } else {
                    failures.append("cut after call \(state.crashPoint), \(state.label): \(problem)")
                }
            }
            return (states.count, failures, tornBlockLost)
        }

        /// Checks that every file of the acknowledged version (the first) reads back whole, each
        /// 4 KiB block as that block of one of `versions` (zeros past a version's end), its size
        /// from the acknowledged one's to the largest.
        private func verifyBlockwise(_ backing: String, versions: [[String: [UInt8]]], epoch: Epoch) -> String? {
            do {
                let volume = try reopen(backing)
                guard volume.header.epoch >= epoch else { return "opened at epoch \(volume.header.epoch), below \(epoch)" }
                let tree = try BackingTree(volume: volume)
                for key in Set(versions.flatMap(\.keys)) where key.contains("@") {
                    // An attribute: the value of one of the versions, or missing as in one of them.
                    let parts = key.split(separator: "@", maxSplits: 1).map(String.init)
                    let node = try parts[0].split(separator: "/").reduce(tree.root) { try tree.lookup(Array($1.utf8), in: $0).0 }
                    var value: [UInt8]?
                    do {
                        value = try tree.getXattr(node, name: parts[1])
                    } catch let error as SystemError where error.errno == ENODATA {}
                    guard versions.contains(where: { $0[key] == value }) else { return "\(key): in no version" }
                }
                for (path, acknowledged) in versions[0] where !path.contains("@") {
                    let node = try path.split(separator: "/").reduce(tree.root) { try tree.lookup(Array($1.utf8), in: $0).0 }
                    let handle = try tree.open(node, flags: O_RDONLY, caller: 0)
                    defer { tree.close(handle) }
                    let stored = try tree.read(node, through: handle, offset: 0, count: 1 << 20) { Array($0) }
                    let contents = versions.compactMap { $0[path] }
                    guard stored.count >= acknowledged.count, stored.count <= contents.map(\.count).max()! else {
                        return "\(path): \(stored.count) bytes"
                    }
                    for start in stride(from: 0, to: stored.count, by: 4096) {
                        let range = start..<min(start + 4096, stored.count)
                        let matches = contents.contains { content in
                            range.allSatisfy { stored[$0] == ($0 < content.count ? content[$0] : 0) }
                        }
                        guard matches else { return "\(path): block \(start / 4096) is in no version" }
                    }
                }
                return try directoryAlarm(tree, tree.root, path: "")
            } catch {
                return "\(error)"
            }
        }

        /// Checks the acknowledged `files` in the volume at `backing`; with `sparing`, not the
        /// blocks whose stored bytes overlap that backing byte range.
        private func verify(_ backing: String, files: [String: [UInt8]], epoch: Epoch, sparing: Range<Int>? = nil) -> String? {
            do {
                let volume = try reopen(backing)
                guard volume.header.epoch >= epoch else { return "opened at epoch \(volume.header.epoch), below \(epoch)" }
                let tree = try BackingTree(volume: volume)
                for (key, content) in files.sorted(by: { $0.key < $1.key }) {
                    // `path@name`: the attribute `name` of the file or directory at `path`.
                    let path = String(key.split(separator: "@", maxSplits: 1)[0])
                    var node = tree.root
                    for component in path.split(separator: "/") {
                        let handle = try tree.openDirectory(node)
                        defer { tree.close(handle) }
                        _ = try tree.listing(of: node, through: handle)
                        node = try tree.lookup(Array(component.utf8), in: node).0
                    }
                    if key != path {
                        _ = try tree.listXattrs(node)
                        guard try tree.getXattr(node, name: String(key.dropFirst(path.count + 1))) == content else { return "\(key) differs" }
                        continue
                    }
                    let handle = try tree.open(node, flags: O_RDONLY, caller: 0)
                    defer { tree.close(handle) }
                    if let sparing {
                        let layout = volume.contentLayout
                        for block in 0..<((content.count + 4095) / 4096) {
                            let stored = layout.backingOffset(block: block)..<layout.backingOffset(block: block + 1)
                            guard !stored.overlaps(sparing) else { continue }
                            let range = (block * 4096)..<min(content.count, (block + 1) * 4096)
                            let read = try tree.read(node, through: handle, offset: range.lowerBound, count: range.count) { Array($0) }
                            guard read == Array(content[range]) else { return "\(path): block \(block) differs" }
                        }
                        continue
                    }
                    let stored = try tree.read(node, through: handle, offset: 0, count: 1 << 20) { Array($0) }
                    // A cut may keep the growth of a file by an append that no sync acknowledged
                    // without the appended bytes: they read as zeros (FORMAT.md §6).
                    let zeroFilled = stored.count > content.count && Array(stored.prefix(content.count)) == content
                        && stored[content.count...].allSatisfy { $0 == 0 }
                    guard stored == content || zeroFilled else { return "\(path): the \(stored.count) bytes read differ from the \(content.count) written" }
                }
                return try directoryAlarm(tree, tree.root, path: "")
            } catch {
                return "\(error)"
            }
        }

        /// Lists every directory of the state and looks up every entry, which checks each
        /// against its directory's record: no state a cut leaves may raise a directory
        /// integrity error (FORMAT.md §5.6). Other errors (a directory whose IV a cut took
        /// before any sync) are the crash states §5.1 describes, not alarms.
        private func directoryAlarm(_ tree: BackingTree, _ directory: BackingNode, path: String) throws -> String? {
            let entries: [BackingTree.ListedEntry]
            do {
                let handle = try tree.openDirectory(directory)
                defer { tree.close(handle) }
                entries = try tree.listing(of: directory, through: handle)
            } catch let alarm as DirectoryError {
                return "\(path)/: \(alarm)"
            } catch {
                return nil
            }
            for entry in entries {
                let child = path + "/" + String(decoding: entry.name, as: UTF8.self)
                do {
                    let (node, _) = try tree.lookup(entry.name, in: directory)
                    if node.fileType == S_IFDIR, let alarm = try directoryAlarm(tree, node, path: child) { return alarm }
                } catch let alarm as DirectoryError {
                    return "\(child): \(alarm)"
                } catch {}
            }
            return nil
        }
    }

    func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255) } }

    /// An etcd-like log: records of 100 to 700 bytes appended, each made durable with fdatasync.
    @Test func appendsEachFollowedByFdatasync() throws {
        let run = try Run()
        let (handle, file, _) = try run.tree.create(Array("log".utf8), in: run.tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { run.tree.close(handle) }
        var content: [UInt8] = []
        for _ in 0..<12 {
            let record = random(Int.random(in: 100...700))
            content += record
            try run.writeAndSync(record, at: nil, to: file, through: handle, dataOnly: true, making: ["log": content])
        }
        try run.expectNothingLost("appends with fdatasync", tornBlocksMayLose: false)
    }

    /// An etcd WAL segment: preallocated (so the whole of it is below the committed size), then
    /// records of 100 to 700 bytes each written in two parts, made durable with fdatasync after
    /// both: the second part rewrites the block the first one wrote since the sync. No state a
    /// cut leaves reads as damage, and nothing acknowledged is lost.
    @Test func preallocatedLogWrittenInPartsBetweenFdatasyncs() throws {
        let run = try Run()
        let (handle, file, _) = try run.tree.create(Array("wal".utf8), in: run.tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { run.tree.close(handle) }
        var content = [UInt8](repeating: 0, count: 16 * 4096)
        try run.tree.allocate(file, through: handle, mode: 0, offset: 0, length: content.count, caller: 0)
        run.changed(["wal": content])
        try run.tree.sync(handle, of: file, dataOnly: true)
        run.acknowledge(["wal": content])
        var end = 0
        for _ in 0..<10 {
            let record = random(Int.random(in: 100...700)), split = Int.random(in: 1..<record.count)
            content.replaceSubrange(end..<(end + split), with: record.prefix(split))
            try record.prefix(split).withUnsafeBytes { try run.tree.write(file, through: handle, offset: end, data: UnsafeRawBufferPointer($0), caller: 0) }
            run.changed(["wal": content])
            content.replaceSubrange((end + split)..<(end + record.count), with: record.dropFirst(split))
            try run.writeAndSync(Array(record.dropFirst(split)), at: end + split, to: file, through: handle, dataOnly: true, making: ["wal": content])
            end += record.count
        }
        try run.expectNothingLost("a preallocated log written in parts", tornBlocksMayLose: false)
    }

    /// An anchored volume: appends each made durable with fdatasync, the directory's fsync and a
    /// rekey between them, each followed by a round of the anchor. No state a cut leaves is
    /// older than the machine's anchor (a false rollback alarm), and everything acknowledged
    /// reads back.
    @Test func anchoredAppendsDirectoryCommitsAndRekeys() throws {
        let run = try Run(anchored: true)
        let (handle, file, _) = try run.tree.create(Array("log".utf8), in: run.tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { run.tree.close(handle) }
        var content: [UInt8] = []
        for round in 0..<6 {
            let record = random(Int.random(in: 100...700))
            content += record
            try run.writeAndSync(record, at: nil, to: file, through: handle, dataOnly: true, making: ["log": content])
            if round == 2 {
                let directory = try run.tree.openDirectory(run.tree.root)
                try run.tree.sync(directory, of: run.tree.root, dataOnly: false)
                run.tree.close(directory)
            }
            if round == 4 {
                try run.volume.rekey(to: 2)
                run.acknowledge(["log": content])
            }
        }
        #expect(run.volume.anchor != nil)
        try run.expectNothingLost("anchored appends, a directory commit and a rekey", tornBlocksMayLose: false)
    }

    /// Files and a directory that no sync committed, committed by the unmount after its syncfs:
    /// no state a cut leaves during those commits raises an alarm, and everything reads back.
    @Test func theUnmountCommitsWhatNoSyncDid() throws {
        let run = try Run()
        let tree = run.tree
        let (d, _) = try tree.mkdir(Array("d".utf8), in: tree.root, mode: 0o755, owner: nil)
        var files: [String: [UInt8]] = [:]
        for (path, directory, size) in [("d/a", d, 9000), ("d/b", d, 100), ("c", tree.root, 5000)] {
            let name = Array(path.split(separator: "/").last!.utf8)
            let (handle, file, _) = try tree.create(name, in: directory, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
            let content = random(size)
            try content.withUnsafeBytes { try tree.write(file, through: handle, offset: 0, data: $0, caller: 0) }
            tree.close(handle)
            files[path] = content
            run.changed(files)
        }
        try tree.syncAll()
        run.acknowledge(files)
        let (committed, failed) = try tree.commitUncommitted()
        #expect(committed == 5 && failed == 0, "three files, d and the root")
        try run.expectNothingLost("the unmount's commit", tornBlocksMayLose: false)
    }

    /// Appends of up to two blocks and more, some two in a row before one fdatasync, through a
    /// file reopened (and so unknown to the tree) halfway: what an earlier sync acknowledged
    /// survives however the shadow slots are in use.
    @Test func appendsAcrossBlocksSomeUnsyncedThroughAReopenedFile() throws {
        let run = try Run()
        var (handle, file, _) = try run.tree.create(Array("log".utf8), in: run.tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        var content: [UInt8] = []
        // Sizes that cross one, two or no block boundaries and leave full blocks in the slots
        // when the file is reopened.
        for (round, size) in [3531, 1877, 2234, 3924, 4840, 4208, 7384, 6916, 4080, 496].enumerated() {
            if round == 4 {
                run.tree.close(handle)
                let reopened = try BackingTree(volume: run.volume)
                file = try reopened.lookup(Array("log".utf8), in: reopened.root).0
                handle = try reopened.open(file, flags: O_RDWR, caller: 0)
            }
            let record = random(size)
            content += record
            if round % 3 == 1 {
                try record.withUnsafeBytes { try run.tree.write(file, through: handle, offset: nil, data: $0, caller: 0) }
                run.changed(["log": content])
            } else {
                try run.writeAndSync(record, at: nil, to: file, through: handle, dataOnly: true, making: ["log": content])
            }
        }
        run.tree.close(handle)
        try run.expectNothingLost("appends across blocks", tornBlocksMayLose: false)
    }

    /// A second open of the file between two appends that no sync separates (another process
    /// opening the log): it must not forget that the first append's copy is not durable yet.
    @Test func appendsThroughASecondOpenBetweenSyncs() throws {
        let run = try Run()
        let (handle, file, _) = try run.tree.create(Array("log".utf8), in: run.tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { run.tree.close(handle) }
        var content = random(3000)
        try run.writeAndSync(content, at: 0, to: file, through: handle, dataOnly: true, making: ["log": content])
        for round in 0..<3 {
            let first = random(300)
            content += first
            try first.withUnsafeBytes { try run.tree.write(file, through: handle, offset: nil, data: $0, caller: 0) }
            run.changed(["log": content])
            let other = try run.tree.open(file, flags: O_RDONLY, caller: 0)
            run.tree.close(other)
            let second = random(200 + round)
            content += second
            try run.writeAndSync(second, at: nil, to: file, through: handle, dataOnly: true, making: ["log": content])
        }
        try run.expectNothingLost("appends through a second open", tornBlocksMayLose: false)
    }

    /// A database-like file: 4 KiB overwrites at random offsets, each made durable with fsync.
    @Test func overwritesEachFollowedByFsync() throws {
        let run = try Run()
        let (handle, file, _) = try run.tree.create(Array("db".utf8), in: run.tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { run.tree.close(handle) }
        var content = random(64 * 1024)
        try run.writeAndSync(content, at: 0, to: file, through: handle, dataOnly: false, making: ["db": content])
        for _ in 0..<8 {
            // Never at a block boundary: each write keeps old bytes of the two blocks it touches.
            let offset = Int.random(in: 0..<(60 * 1024)) | 1, page = random(4096)
            content.replaceSubrange(offset..<(offset + 4096), with: page)
            try run.writeAndSync(page, at: offset, to: file, through: handle, dataOnly: false, making: ["db": content])
        }
        try run.expectNothingLost("overwrites with fsync", tornBlocksMayLose: false)
    }

    /// What takes back what a file record promised (docs/FORMAT.md §6.2): truncates down (to
    /// a block boundary and inside a block) and punched holes, between partial overwrites and
    /// appends, each made durable with fsync. The record is committed first each time, so no
    /// state reads as cut, zeroed or rolled back, and nothing acknowledged is lost.
    @Test func truncatesAndHolesEachFollowedByFsync() throws {
        let run = try Run()
        let (handle, file, _) = try run.tree.create(Array("db".utf8), in: run.tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { run.tree.close(handle) }
        var content = random(40_000)
        try run.writeAndSync(content, at: 0, to: file, through: handle, dataOnly: false, making: ["db": content])
        func overwrite(_ offset: Int, _ count: Int) throws {
            let bytes = random(count)
            if content.count < offset + count { content += [UInt8](repeating: 0, count: offset + count - content.count) }
            content.replaceSubrange(offset..<(offset + count), with: bytes)
            try run.writeAndSync(bytes, at: offset, to: file, through: handle, dataOnly: true, making: ["db": content])
        }
        func truncate(_ size: Int) throws {
            try run.tree.truncate(file, to: size, through: handle, caller: 0)
            content = Array(content.prefix(size)) + [UInt8](repeating: 0, count: max(0, size - content.count))
            run.changed(["db": content])
            try run.tree.sync(handle, of: file, dataOnly: true)
            run.acknowledge(["db": content])
        }
        try overwrite(5001, 300)
        try truncate(30_001)
        try overwrite(29_000, 2000)
        // A hole over blocks 2 and 3 and parts of 1 and 4.
        try run.tree.allocate(file, through: handle, mode: epochfs_FALLOC_FL_PUNCH_HOLE | epochfs_FALLOC_FL_KEEP_SIZE, offset: 6000, length: 12_000, caller: 0)
        content.replaceSubrange(6000..<18_000, with: [UInt8](repeating: 0, count: 12_000))
        run.changed(["db": content])
        try run.tree.sync(handle, of: file, dataOnly: false)
        run.acknowledge(["db": content])
        try overwrite(19_000, 100) // the block at the hole's end
        try truncate(16_384)
        try overwrite(30_000, 500) // past the end: a gap of holes
        try truncate(12_000)
        try run.expectNothingLost("truncates and holes with fsync", tornBlocksMayLose: false)
    }

    /// mkdir, create (a long name too), rename, each made durable by fsync of the file and
    /// fsyncdir of its directory and the parents, as careful programs do.
    @Test func directoriesMadeDurableByFsyncOfTheirParents() throws {
        let run = try Run()
        let tree = run.tree
        let long = String(repeating: "l", count: 200)
        func syncDirectory(_ path: String) throws {
            let node = try run.directory(path)
            let handle = try tree.openDirectory(node)
            defer { tree.close(handle) }
            try tree.sync(handle, of: node, dataOnly: false)
        }
        let (d, _) = try tree.mkdir(Array("d".utf8), in: tree.root, mode: 0o755, owner: nil)
        let (sub, _) = try tree.mkdir(Array(long.utf8), in: d, mode: 0o755, owner: nil)
        let (handle, file, _) = try tree.create(Array("f".utf8), in: sub, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        let content = random(5000)
        try content.withUnsafeBytes { try tree.write(file, through: handle, offset: 0, data: $0, caller: 0) }
        try tree.sync(handle, of: file, dataOnly: false)
        tree.close(handle)
        try syncDirectory("d/" + long)
        try syncDirectory("d")
        try syncDirectory("")
        run.acknowledge(["d/\(long)/f": content])

        try tree.rename(Array("f".utf8), in: sub, to: Array(String(repeating: "g", count: 230).utf8), in: d, flags: 0)
        run.changed(["d/" + String(repeating: "g", count: 230): content])
        try syncDirectory("d/" + long)
        try syncDirectory("d")
        run.acknowledge(["d/" + String(repeating: "g", count: 230): content])
        let (subsub, _) = try tree.mkdir(Array("e".utf8), in: sub, mode: 0o755, owner: nil)
        _ = try tree.symlink(Array("../\(long)".utf8), named: Array("link".utf8), in: subsub, owner: nil)
        try syncDirectory("d/\(long)/e")
        try syncDirectory("d/" + long)
        let moved = "d/" + String(repeating: "g", count: 230)
        run.acknowledge([moved: content])

        // Committed names removed, renamed and replaced (format 4: each let go in its
        // directory's record first, FORMAT.md §5.6).
        try tree.rename(Array("link".utf8), in: subsub, to: Array("link2".utf8), in: subsub, flags: 0)
        try syncDirectory("d/\(long)/e")
        try tree.unlink(Array("link2".utf8), in: subsub)
        try tree.rmdir(Array("e".utf8), in: sub)
        try syncDirectory("d/" + long)
        let (second, other, _) = try tree.create(Array("h".utf8), in: d, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        let replaced = random(3000)
        try replaced.withUnsafeBytes { try tree.write(other, through: second, offset: 0, data: $0, caller: 0) }
        try tree.sync(second, of: other, dataOnly: false)
        tree.close(second)
        try syncDirectory("d")
        run.acknowledge([moved: content, "d/h": replaced])
        try tree.rename(Array(String(repeating: "g", count: 230).utf8), in: d, to: Array("h".utf8), in: d, flags: 0)
        run.changed(["d/h": content])
        try syncDirectory("d")
        run.acknowledge(["d/h": content])
        // The directory committed before the new file's own fsync: its id is not durable yet,
        // so the record binds the name by type alone.
        let (third, late, _) = try tree.create(Array("late".utf8), in: d, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        try replaced.withUnsafeBytes { try tree.write(late, through: third, offset: 0, data: $0, caller: 0) }
        try syncDirectory("d")
        try syncDirectory("") // makes d's record durable, and not the new file's bytes
        try tree.sync(third, of: late, dataOnly: false)
        tree.close(third)
        run.acknowledge(["d/h": content, "d/late": replaced])

        try run.expectNothingLost("directories with fsyncdir", tornBlocksMayLose: false)
    }

    /// Attributes set, replaced and removed on a file and a directory, each change made durable
    /// by an fsync of its object (an fdatasync does not cover attributes), and resealed by a
    /// re-encryption after a rekey (format 5, FORMAT.md §5.5): every state a cut leaves reads
    /// the attributes acknowledged, or a later set, and none raises an integrity error.
    @Test func attributesChangedBetweenSyncs() throws {
        let run = try Run()
        let tree = run.tree
        let (d, _) = try tree.mkdir(Array("d".utf8), in: tree.root, mode: 0o755, owner: nil)
        let (handle, file, _) = try tree.create(Array("f".utf8), in: d, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        defer { tree.close(handle) }
        let content = random(5000)
        try content.withUnsafeBytes { try tree.write(file, through: handle, offset: 0, data: $0, caller: 0) }
        func syncFile(_ dataOnly: Bool = false) throws { try tree.sync(handle, of: file, dataOnly: dataOnly) }
        func syncDirectory(_ node: BackingNode) throws {
            let handle = try tree.openDirectory(node)
            defer { tree.close(handle) }
            try tree.sync(handle, of: node, dataOnly: false)
        }
        try syncFile()
        try syncDirectory(d)
        try syncDirectory(tree.root)
        var files = ["d/f": content]
        run.acknowledge(files)

        func change(_ key: String, _ value: [UInt8]?, on node: BackingNode, sync: () throws -> Void) throws {
            let name = String(key.split(separator: "@")[1])
            if let value { try tree.setXattr(node, name: name, value: value, flags: 0) } else { try tree.removeXattr(node, name: name) }
            files[key] = value
            run.changed(files)
            try sync()
            run.acknowledge(files)
        }
        try change("d/f@user.a", Array("one".utf8), on: file) { try syncFile() }
        try change("d/f@user.a", Array("two".utf8), on: file) { try syncFile() }
        try change("d/f@user.b", random(300), on: file) { try syncFile() }
        // Two changes under one fdatasync: neither is acknowledged until the fsync.
        try tree.setXattr(file, name: "user.a", value: Array("three".utf8), flags: 0)
        try tree.removeXattr(file, name: "user.b")
        files["d/f@user.a"] = Array("three".utf8)
        files["d/f@user.b"] = nil
        run.changed(files)
        try syncFile(true)
        try syncFile()
        run.acknowledge(files)
        try change("d@user.dir", Array("directory".utf8), on: d) { try syncDirectory(d) }
        try change("d@user.dir", Array("again".utf8), on: d) { try syncDirectory(d) }
        try change("d@user.other", random(50), on: d) { try syncDirectory(d) }
        try change("d@user.dir", nil, on: d) { try syncDirectory(d) }
        // Resealed under a new epoch: the same values, other stored bytes.
        try run.volume.rekey(to: 2)
        run.acknowledge(files)
        _ = try tree.resealXattrs(file)
        _ = try tree.resealXattrs(d)
        try syncFile()
        try syncDirectory(d)
        run.acknowledge(files)

        try run.expectNothingLost("attributes", tornBlocksMayLose: false)
    }

    /// A re-encryption of files made durable before a rekey, resealing every block (a
    /// partial last block too) while keeping all its bytes: nothing acknowledged is lost,
    /// not even in the blocks being rewritten. The files are held (open, on a mount), so
    /// they are resealed in place through the shadow slots.
    @Test func reencryption() throws {
        let run = try Run()
        let held = try makeFilesAndRekey(run, [("a", 5 * 4096 + 1000), ("b", 4096 + 7)]).nodes
        let inodes = try held.map { try run.volume.io.fstat($0.fd).st_ino }
        let done = try withExtendedLifetime(held) { try Reencryption.run(run.tree, chunk: 3) }
        #expect(done.blocks.resealed == 8)
        #expect(try ["a", "b"].map { try run.backingInode($0) } == inodes)

        try run.expectNothingLost("re-encryption in place", tornBlocksMayLose: false)
    }

    /// The same by copy-on-write (files nothing holds, one of them sparse, in a
    /// subdirectory): a cut leaves each file old or new, whole.
    @Test func reencryptionByCopy() throws {
        let run = try Run()
        _ = try run.tree.mkdir(Array("d".utf8), in: run.tree.root, mode: 0o755, owner: nil)
        try run.tree.syncAll()
        // The nodes go before the walk, as when the mount forgot the files.
        let inodes = try makeFilesAndRekey(run, [("a", 5 * 4096 + 1000), ("d/b", 4096 + 7)], sparse: "d/s").nodes.map {
            try run.volume.io.fstat($0.fd).st_ino
        }
        let done = try Reencryption.run(run.tree, chunk: 3)
        #expect(done.blocks.resealed == 10 && done.blocks.current == 2)
        // Copied: new inodes under the names.
        #expect(try zip(inodes, ["a", "d/b", "d/s"].map { try run.backingInode($0) }).allSatisfy { $0 != $1 })

        try run.expectNothingLost("re-encryption by copy", tornBlocksMayLose: false)
    }

    /// Writes and syncs files of the given sizes (and `sparse`: a block, two holes, a block),
    /// rekeys, and returns the files and their nodes (dropped by the caller to let a walk copy).
    private func makeFilesAndRekey(_ run: Run, _ sizes: [(String, Int)], sparse: String? = nil) throws -> (files: [String: [UInt8]], nodes: [BackingNode]) {
        var files: [String: [UInt8]] = [:]
        var nodes: [BackingNode] = []
        func create(_ path: String) throws -> (FileDescriptor, BackingNode) {
            let parts = path.split(separator: "/")
            let parent = try parts.dropLast().reduce(run.tree.root) { try run.tree.lookup(Array($1.utf8), in: $0).0 }
            let (handle, file, _) = try run.tree.create(Array(parts.last!.utf8), in: parent, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
            return (handle, file)
        }
        for (path, size) in sizes {
            let (handle, file) = try create(path)
            files[path] = random(size)
            try run.writeAndSync(files[path]!, at: 0, to: file, through: handle, dataOnly: false, making: files)
            run.tree.close(handle)
            nodes.append(file)
        }
        if let sparse {
            let (handle, file) = try create(sparse)
            let first = random(4096), last = random(4096)
            files[sparse] = first + [UInt8](repeating: 0, count: 2 * 4096) + last
            try run.writeAndSync(first, at: 0, to: file, through: handle, dataOnly: false, making: files.merging([sparse: first]) { $1 })
            try run.writeAndSync(last, at: 3 * 4096, to: file, through: handle, dataOnly: false, making: files)
            run.tree.close(handle)
            nodes.append(file)
        }
        try run.volume.rekey(to: 2)
        run.acknowledge(files)
        return (files, nodes)
    }

    /// Two rekeys and a raft cutover over a file made durable before them.
    @Test func rekeys() throws {
        let run = try Run()
        let (handle, file, _) = try run.tree.create(Array("f".utf8), in: run.tree.root, flags: O_RDWR | O_CREAT, mode: 0o600, owner: nil)
        let content = random(10_000)
        try run.writeAndSync(content, at: 0, to: file, through: handle, dataOnly: false, making: ["f": content])
        run.tree.close(handle)
        try run.volume.rekey(to: 2)
        run.acknowledge(["f": content])
        try run.volume.setRaftCutover(7)
        try run.volume.rekey(to: 3)
        run.acknowledge(["f": content])

        try run.expectNothingLost("rekeys", tornBlocksMayLose: false)
    }
}
