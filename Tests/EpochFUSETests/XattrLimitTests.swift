import CLinux
import Foundation
import Glibc
import Support
import Testing

/// How many and how large `user.` attributes a file holds (docs/FORMAT.md §5.5, issue 18
/// item 5): exactly what the backing file system holds of the backing names and sealed
/// values, measured on a mount over ext4 and on that ext4 itself in the same run.
@Suite(.serialized) struct XattrLimitTests {
    /// The backing name's length for a NAME of `n` bytes: `user.epochfs.` and base64url of
    /// the name sealed with AES-SIV (16 bytes longer).
    static func backingNameLength(_ n: Int) -> Int { 13 + (4 * (n + 16) + 2) / 3 }

    /// How many attributes of `nameLength`-byte names and `valueLength`-byte values a new file
    /// at `path` takes before ENOSPC; -errno for any other failure.
    static func count(at path: String, nameLength: Int, valueLength: Int) -> Int {
        guard FileManager.default.createFile(atPath: path, contents: nil) else { return -1 }
        defer { unlink(path) }
        let value = [UInt8](repeating: 0x76, count: valueLength)
        for index in 0..<5000 {
            let digits = String(index)
            let name = "user." + String(repeating: "0", count: nameLength - 5 - digits.count) + digits
            if epochfs_setxattr(path, name, value, UInt(valueLength), 0) != 0 { return errno == ENOSPC ? index : -Int(errno) }
        }
        return 5000
    }

    /// The largest value a new file at `path` takes under one name of `nameLength` bytes.
    static func largestValue(at path: String, nameLength: Int) -> Int {
        guard FileManager.default.createFile(atPath: path, contents: nil) else { return -1 }
        defer { unlink(path) }
        let name = "user." + String(repeating: "n", count: nameLength - 5)
        let value = [UInt8](repeating: 0x76, count: 65_536)
        var taken = 0, refused = 65_537
        while refused - taken > 1 {
            let middle = (taken + refused) / 2
            if epochfs_setxattr(path, name, value, UInt(middle), 0) == 0 { taken = middle } else { refused = middle }
        }
        return taken
    }

    @Test func aFileHoldsWhatTheBackingHoldsOfTheSealedAttributes() throws {
        let disk = try Ext4Disk()
        let volume = try MountedVolume(on: disk)
        defer { volume.destroy() }
        let plain = disk.path + "/plain"
        try FileManager.default.createDirectory(atPath: plain, withIntermediateDirectories: true)
        var measured: [String] = []
        for (nameLength, valueLength) in [(10, 0), (10, 16), (20, 100), (21, 1000), (100, 10), (165, 0)] {
            let onMount = Self.count(at: volume.path("f"), nameLength: nameLength, valueLength: valueLength)
            let onExt4 = Self.count(at: plain + "/f", nameLength: nameLength, valueLength: valueLength)
            let sealedOnExt4 = Self.count(at: plain + "/g", nameLength: Self.backingNameLength(nameLength), valueLength: valueLength + 34)
            #expect(onMount > 0 && onMount == sealedOnExt4, "names of \(nameLength), values of \(valueLength) bytes")
            measured.append("\(nameLength)/\(valueLength): \(onMount) (ext4 \(onExt4))")
        }
        // The figures docs/FORMAT.md §5.5 states.
        #expect(measured.first == "10/0: 42 (ext4 172)", "\(measured)")
        for nameLength in [10, 165] {
            let onMount = Self.largestValue(at: volume.path("f"), nameLength: nameLength)
            let sealedOnExt4 = Self.largestValue(at: plain + "/g", nameLength: Self.backingNameLength(nameLength))
            #expect(onMount == sealedOnExt4 - 34, "largest value under a \(nameLength)-byte name")
            if nameLength == 10 { #expect(onMount == 3966) }
        }
    }
}
