import EpochCrypto
import EpochFormat
import EpochHeader
import EpochIO
import EpochStore
import EpochVolume
import Glibc
import Support

/// A new volume (epoch 1, 4 KiB blocks) in a temporary directory, with key files for
/// `epochs`, and its tree without FUSE, its backing calls made through `io`.
struct OfflineVolume {
    let keys: KeyFiles
    let directory = TemporaryDirectory()
    let tree: BackingTree

    init(epochs: ClosedRange<UInt32>, io: any BackingIO = SystemIO()) throws {
        keys = try KeyFiles(epochs: epochs)
        let backing = directory.path + "/backing"
        _ = try Volume.create(backing: backing, keySource: "file:\(keys.directory.path)/%d.key", epoch: 1, blockSize: 4096)
        tree = try BackingTree(volume: try LiveVolume(backing: backing, io: io))
    }
}

/// Key files `keys/<epoch>.key` (hex) for epochs 1...count, in a temporary directory.
struct KeyFiles {
    let directory = TemporaryDirectory()
    let keys: [Epoch: [UInt8]]

    init(epochs: ClosedRange<UInt32> = 1...8) throws {
        var keys: [Epoch: [UInt8]] = [:]
        for epoch in epochs.map(Epoch.init(rawValue:)) {
            let key = try SecureRandom.bytes(32)
            keys[epoch] = key
            directory.write(Array((toHex(key) + "\n").utf8), to: "\(epoch).key")
        }
        self.keys = keys
    }

    var source: FileKeySource { try! FileKeySource(template: directory.path + "/%d.key") }
}
