import EpochCrypto
import EpochFormat
import EpochVolume
import Glibc
import Support

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
