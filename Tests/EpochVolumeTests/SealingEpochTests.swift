import CLinux
import EpochFormat
import EpochIO
import EpochStore
import EpochVolume
import Foundation
import Glibc
import Support
import Synchronization
import Testing

/// "After a rekey returns, nothing is sealed under the old epoch": for symlink targets and
/// xattr values as for file blocks. Symlinks and xattrs are made while rekeys run, each
/// backing call that stores one slowed down by the test double so that a seal and its write
/// straddle a rekey. After each rekey returns, the entries present are noted; every entry that
/// appears later must carry that rekey's epoch or a newer one.
@Suite struct SealingEpochTests {
    final class Stop: Sendable {
        let flag = Atomic<Bool>(false)
        /// Symlinks (each with an xattr) made so far.
        let made = Atomic<Int>(0)
        let failures = Mutex<[String]>([])
    }

    @Test func symlinksAndXattrsMadeDuringRekeysCarryNoOlderEpochThanARekeyThatReturned() throws {
        let keys = try KeyFiles(epochs: 1...25)
        let directory = TemporaryDirectory()
        let backing = directory.path + "/backing"
        _ = try Volume.create(backing: backing, keySource: "file:\(keys.directory.path)/%d.key", epoch: 1, blockSize: 4096)
        let io = RecordingIO()
        io.inject(.pause(0.003), into: .symlinkat, andAfter: true)
        io.inject(.pause(0.003), into: .setxattr, andAfter: true)
        let volume = try LiveVolume(backing: backing, io: io)
        let tree = try BackingTree(volume: volume)
        let stop = Stop()
        let maker = Thread {
            var index = 0
            var file: BackingNode?
            while !stop.flag.load(ordering: .relaxed) {
                do {
                    // A few xattrs per file: a tmpfs backing dir holds little xattr data per inode.
                    if index % 8 == 0 {
                        let (handle, node, _) = try tree.create(Array("file\(index)".utf8), in: tree.root, flags: O_RDWR | O_CREAT,
                                                                mode: 0o600, owner: nil)
                        tree.close(handle)
                        file = node
                    }
                    index += 1
                    _ = try tree.symlink(Array("target \(index)".utf8), named: Array("link\(index)".utf8), in: tree.root, owner: nil)
                    try tree.setXattr(file!, name: "user.a\(index)", value: Array("value \(index)".utf8), flags: 0)
                    stop.made.add(1, ordering: .releasing)
                } catch {
                    stop.failures.withLock { $0.append("\(error)") }
                    return
                }
            }
        }
        maker.start()
        var seen: [(epoch: Epoch, symlinks: Set<String>, xattrs: Set<String>)] = []
        for epoch in (UInt32(2)...25).map(Epoch.init(rawValue:)) {
            try volume.rekey(to: epoch)
            seen.append((epoch, Set(try names(backing, DT_LNK)), Set(try xattrNames(backing))))
            // Three items made wholly after this rekey returned (so under its epoch) before the
            // next: the counts below hold by construction, not by the scheduler's grace.
            let target = stop.made.load(ordering: .acquiring) + 4
            while stop.made.load(ordering: .acquiring) < target && !maker.isFinished { usleep(1000) }
        }
        stop.flag.store(true, ordering: .relaxed)
        while !maker.isFinished { usleep(1000) }
        #expect(stop.failures.withLock { $0 } == [])

        var symlinksChecked = 0, xattrsChecked = 0
        let symlinkEpochs = try Dictionary(uniqueKeysWithValues: names(backing, DT_LNK).map { ($0, try symlinkEpoch(backing + "/" + $0)) })
        let xattrEpochs = try Dictionary(uniqueKeysWithValues: xattrNames(backing).map { ($0, try xattrEpoch(backing + "/" + $0)) })
        for (epoch, symlinks, xattrs) in seen {
            for (name, sealed) in symlinkEpochs where !symlinks.contains(name) {
                #expect(sealed >= epoch, "a symlink that appeared after the rekey to \(epoch) returned carries epoch \(sealed)")
                symlinksChecked += 1
            }
            for (name, sealed) in xattrEpochs where !xattrs.contains(name) {
                #expect(sealed >= epoch, "an xattr set after the rekey to \(epoch) returned carries epoch \(sealed)")
                xattrsChecked += 1
            }
        }
        #expect(symlinksChecked > 50 && xattrsChecked > 50, "\(symlinksChecked) symlinks, \(xattrsChecked) xattrs")
        #expect(Set(symlinkEpochs.values).count > 5, "symlinks were made under many epochs")
    }

    /// The backing names of the entries of `type` in the backing root.
    private func names(_ backing: String, _ type: Int) throws -> [String] {
        try SystemIO().readdir(at: backing)
            .filter { Int($0.type) == type && !NameCodec.isInternal($0.name) }.map(\.name)
    }

    /// Every stored xattr of the regular files in the backing root, as `FILE/NAME`.
    private func xattrNames(_ backing: String) throws -> [String] {
        try names(backing, DT_REG).flatMap { file in try xattrNames(ofFile: backing + "/" + file).map { file + "/" + $0 } }
    }

    private func symlinkEpoch(_ path: String) throws -> Epoch {
        let target = try FileManager.default.destinationOfSymbolicLink(atPath: path)
        let sealed = try #require(Base64URL.decode(target))
        return try Array(sealed.dropFirst(FileID.byteCount)).withUnsafeBytes { try Envelope.keyID(of: $0) }
    }

    private func xattrNames(ofFile path: String) throws -> [String] {
        var raw = [CChar](repeating: 0, count: 1 << 20)
        let length = epochfs_listxattr(path, &raw, UInt(raw.count))
        try #require(length >= 0)
        return raw.prefix(length).split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
    }

    /// The epoch of the xattr `FILE/NAME` names.
    private func xattrEpoch(_ fileAndName: String) throws -> Epoch {
        let slash = fileAndName.lastIndex(of: "/")!
        let path = String(fileAndName[..<slash]), name = String(fileAndName[fileAndName.index(after: slash)...])
        var value = [UInt8](repeating: 0, count: 4096)
        let length = epochfs_getxattr(path, name, &value, UInt(value.count))
        try #require(length > 0)
        return try Array(value.prefix(length)).withUnsafeBytes { try Envelope.keyID(of: $0) }
    }
}
