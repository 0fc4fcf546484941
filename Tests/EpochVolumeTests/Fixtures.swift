import EpochCrypto
import EpochFormat
import EpochVolume
import Glibc
import Support

/// A fresh temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/epochfs-test-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    func write(_ bytes: [UInt8], to name: String) {
        let fd = open(path + "/" + name, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        precondition(fd >= 0)
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    func remove() {
        _ = system("rm -rf '\(path)'")
    }
}

/// Key files `keys/<epoch>.key` (hex) for epochs 1...count, in a temporary directory.
struct KeyFiles {
    let directory = TemporaryDirectory()
    let keys: [UInt32: [UInt8]]

    init(epochs: ClosedRange<UInt32> = 1...8) throws {
        var keys: [UInt32: [UInt8]] = [:]
        for epoch in epochs {
            let key = try SecureRandom.bytes(32)
            keys[epoch] = key
            directory.write(Array((toHex(key) + "\n").utf8), to: "\(epoch).key")
        }
        self.keys = keys
    }

    var source: FileKeySource { try! FileKeySource(template: directory.path + "/%d.key") }
}
