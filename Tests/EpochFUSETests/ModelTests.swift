import Foundation
import Glibc
import Support
import Testing

/// SplitMix64: small, seedable, and the same on every machine, so a printed seed replays.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Random operations applied in lockstep to the mount and to a plain directory (the model),
/// compared after every step. Replay a failure with EPOCHFS_MODEL_SEED=<seed>.
final class LockstepRun {
    let plain: String
    let mount: String
    let blockSize: Int
    var random: SeededRandom
    let seed: UInt64
    /// Open read-write descriptors per relative file path: (plain, mount).
    var open: [String: (Int32, Int32)] = [:]
    var directories = ["", "d0", "d1"]
    var failures: [String] = []

    init(plain: String, mount: String, blockSize: Int, seed: UInt64) {
        self.plain = plain
        self.mount = mount
        self.blockSize = blockSize
        self.seed = seed
        random = SeededRandom(state: seed)
    }

    func full(_ root: String, _ relative: String) -> String { relative.isEmpty ? root : root + "/" + relative }

    func randomName() -> String {
        let directory = directories.randomElement(using: &random)!
        let name = "f\(Int.random(in: 0..<5, using: &random))"
        return directory.isEmpty ? name : directory + "/" + name
    }

    func both(_ body: (String) -> Int32) -> (Int32, Int32) { (body(plain), body(mount)) }

    /// Records a mismatch between the two trees for step `step`.
    func expectSame<T: Equatable>(_ model: T, _ actual: T, _ what: String, step: Int) {
        if model != actual { failures.append("step \(step) (seed \(seed)): \(what): model \(model), mount \(actual)") }
    }

    func outcome(_ result: Int32) -> String { result < 0 ? "errno \(errno)" : "ok" }

    func openBoth(_ path: String, flags: Int32) -> (Int32, Int32)? {
        let p = Glibc.open(full(plain, path), flags, 0o644)
        let pErrno = errno
        let m = Glibc.open(full(mount, path), flags, 0o644)
        let mErrno = errno
        if (p < 0) != (m < 0) || (p < 0 && pErrno != mErrno) {
            failures.append("open \(path) (seed \(seed)): model \(p < 0 ? "errno \(pErrno)" : "ok"), mount \(m < 0 ? "errno \(mErrno)" : "ok")")
        }
        guard p >= 0, m >= 0 else {
            if p >= 0 { close(p) }
            if m >= 0 { close(m) }
            return nil
        }
        return (p, m)
    }

    func closeBoth(_ path: String) {
        if let (p, m) = open.removeValue(forKey: path) {
            close(p)
            close(m)
        }
    }

    /// Content, size and mode of `path` in both trees, through fresh descriptors so the mount
    /// answers from its own reads, not the page cache of the descriptors in use.
    func compare(_ path: String, step: Int) {
        var modelInfo = stat(), mountInfo = stat()
        let modelStat = lstat(full(plain, path), &modelInfo), mountStat = lstat(full(mount, path), &mountInfo)
        expectSame(modelStat, mountStat, "lstat \(path)", step: step)
        guard modelStat == 0, mountStat == 0 else { return }
        expectSame(modelInfo.st_mode, mountInfo.st_mode, "mode \(path)", step: step)
        expectSame(modelInfo.st_nlink, mountInfo.st_nlink, "nlink \(path)", step: step)
        guard modelInfo.st_mode & S_IFMT == S_IFREG else { return }
        expectSame(modelInfo.st_size, mountInfo.st_size, "size \(path)", step: step)
        let model = FileManager.default.contents(atPath: full(plain, path))
        let actual = FileManager.default.contents(atPath: full(mount, path))
        if model != actual {
            let firstDifference = zip(model ?? Data(), actual ?? Data()).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            failures.append("step \(step) (seed \(seed)): content of \(path) differs (model \(model?.count ?? -1) bytes, mount \(actual.map { "\($0.count) bytes" } ?? "unreadable errno \(errno)"), first difference at \(firstDifference.map(String.init) ?? "end"))")
        }
    }

    func step(_ number: Int) {
        var touched: [String] = []
        let choice = Int.random(in: 0..<100, using: &random)
        switch choice {
        case 0..<35: // write at a random offset and size, creating the file when needed
            let path = open.keys.sorted().randomElement(using: &random) ?? randomName()
            if open[path] == nil {
                guard let fds = openBoth(path, flags: O_RDWR | O_CREAT) else { return }
                open[path] = fds
            }
            let (p, m) = open[path]!
            let offset = Int.random(in: 0...(3 * blockSize + 100), using: &random)
            let data = (0..<Int.random(in: 1...(2 * blockSize + 50), using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            let results = data.withUnsafeBytes { raw in (pwrite(p, raw.baseAddress, raw.count, off_t(offset)), pwrite(m, raw.baseAddress, raw.count, off_t(offset))) }
            expectSame(results.0, results.1, "pwrite \(path) at \(offset) size \(data.count)", step: number)
            touched.append(path)
        case 35..<45: // truncate up or down
            guard let path = open.keys.sorted().randomElement(using: &random) else { return }
            let size = off_t(Int.random(in: 0...(4 * blockSize), using: &random))
            let (p, m) = open[path]!
            expectSame(outcome(ftruncate(p, size)), outcome(ftruncate(m, size)), "ftruncate \(path) \(size)", step: number)
            touched.append(path)
        case 45..<53: // rename, possibly over another file
            guard let from = open.keys.sorted().randomElement(using: &random) else { return }
            let to = randomName()
            let results = (outcome(rename(full(plain, from), full(plain, to))), outcome(rename(full(mount, from), full(mount, to))))
            expectSame(results.0, results.1, "rename \(from) -> \(to)", step: number)
            if results.0 == "ok", from != to {
                closeBoth(to)
                open[to] = open.removeValue(forKey: from)
            }
            touched.append(to)
        case 53..<58: // hard link
            guard let from = open.keys.sorted().randomElement(using: &random) else { return }
            let to = randomName()
            let results = (outcome(link(full(plain, from), full(plain, to))), outcome(link(full(mount, from), full(mount, to))))
            expectSame(results.0, results.1, "link \(from) -> \(to)", step: number)
            if results.0 == "ok", let fds = openBoth(to, flags: O_RDWR) { open[to] = fds }
            touched += [from, to]
        case 58..<64: // unlink
            guard let path = open.keys.sorted().randomElement(using: &random) else { return }
            closeBoth(path)
            expectSame(outcome(unlink(full(plain, path))), outcome(unlink(full(mount, path))), "unlink \(path)", step: number)
            touched.append(path)
        case 64..<67: // mkdir, or rmdir of an empty directory
            let name = "d\(Int.random(in: 0..<4, using: &random))"
            if directories.contains(name) {
                let results = (outcome(rmdir(full(plain, name))), outcome(rmdir(full(mount, name))))
                expectSame(results.0, results.1, "rmdir \(name)", step: number)
                if results.0 == "ok" { directories.removeAll { $0 == name } }
            } else {
                expectSame(outcome(mkdir(full(plain, name), 0o755)), outcome(mkdir(full(mount, name), 0o755)), "mkdir \(name)", step: number)
                directories.append(name)
            }
            touched.append(name)
        case 67..<75: // close and reopen
            guard let path = open.keys.sorted().randomElement(using: &random) else { return }
            closeBoth(path)
            if let fds = openBoth(path, flags: O_RDWR) { open[path] = fds }
            touched.append(path)
        case 75..<80: // fsync
            guard let (p, m) = open.values.randomElement(using: &random) else { return }
            expectSame(outcome(fsync(p)), outcome(fsync(m)), "fsync", step: number)
        case 80..<88: // mmap write
            guard let path = open.keys.sorted().randomElement(using: &random) else { return }
            let (p, m) = open[path]!
            var info = stat()
            fstat(p, &info)
            guard info.st_size > 0 else { return }
            let size = Int(info.st_size)
            let edits = (0..<Int.random(in: 1...8, using: &random)).map { _ in (Int.random(in: 0..<size, using: &random), UInt8.random(in: 0...255, using: &random)) }
            for fd in [p, m] {
                guard let map = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), map != MAP_FAILED else {
                    failures.append("step \(number) (seed \(seed)): mmap \(path) errno \(errno)")
                    return
                }
                for (offset, byte) in edits { map.storeBytes(of: byte, toByteOffset: offset, as: UInt8.self) }
                msync(map, size, MS_SYNC)
                munmap(map, size)
            }
            touched.append(path)
        default: // chmod
            guard let path = open.keys.sorted().randomElement(using: &random) else { return }
            let mode = mode_t([0o600, 0o644, 0o755, 0o640].randomElement(using: &random)!)
            expectSame(outcome(chmod(full(plain, path), mode)), outcome(chmod(full(mount, path), mode)), "chmod \(path)", step: number)
            touched.append(path)
        }
        for path in touched { compare(path, step: number) }
    }

    func closeAll() { for path in open.keys { closeBoth(path) } }
}

@Suite(.serialized) struct ModelTests {
    @Test func twentyThousandRandomOperationsMatchAPlainDirectory() throws {
        let volume = try MountedVolume(blockSize: 4096)
        defer { volume.destroy() }
        let plain = volume.root + "/plain"
        for root in [plain, volume.mountpoint] {
            try FileManager.default.createDirectory(atPath: root + "/d0", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: root + "/d1", withIntermediateDirectories: true)
        }
        var root = stat()
        stat(volume.mountpoint, &root)
        chmod(plain, root.st_mode & 0o7777) // as the mount's root, the backing dir init made
        let seed = ProcessInfo.processInfo.environment["EPOCHFS_MODEL_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 0...UInt64.max)
        let run = LockstepRun(plain: plain, mount: volume.mountpoint, blockSize: 4096, seed: seed)
        for number in 0..<20_000 {
            run.step(number)
            if number % 2000 == 1999 {
                let model = TreeSnapshot(plain), actual = TreeSnapshot(volume.mountpoint)
                if model != actual { run.failures.append("step \(number) (seed \(seed)): trees differ\n\(actual.difference(from: model))") }
            }
            if !run.failures.isEmpty { break }
        }
        run.closeAll()
        #expect(run.failures.isEmpty, "seed \(seed): \(run.failures.prefix(5).joined(separator: "\n"))\ndaemon: \(volume.mountLog.suffix(2000))")
        let model = TreeSnapshot(plain)
        volume.unmount()
        try volume.mount()
        let remounted = TreeSnapshot(volume.mountpoint)
        #expect(remounted == model, "seed \(seed): after remount\n\(remounted.difference(from: model))")
    }
}
