import CLinux
import EpochFormat
import EpochHeader
import EpochStore
import EpochVolume
import Foundation
import Glibc
import Support
import Testing

/// A key rotation never depends on free space: both header slots own their blocks from
/// `init` on (and from the first open of a volume made before that).
@Suite struct HeaderSpaceTests {
    func allocatedBytes(_ path: String) -> Int {
        var info = stat()
        #expect(stat(path, &info) == 0)
        return Int(info.st_blocks) * 512
    }

    @Test func initAllocatesBothSlotsAndOpenAllocatesThemForAnOlderVolume() throws {
        let keys = try KeyFiles(epochs: 1...1)
        let directory = TemporaryDirectory()
        let backing = directory.path + "/backing"
        _ = try Volume.create(backing: backing, keySource: "file:\(keys.directory.path)/%d.key", epoch: 1, blockSize: 4096)
        let header = backing + "/" + FileHeaderStore.fileName
        #expect(allocatedBytes(header) >= 2 * HeaderSlot.size)

        // What a volume made by an earlier epochfs looks like: slot B a hole until the first rekey.
        let fd = open(header, O_RDWR | O_CLOEXEC)
        #expect(epochfs_fallocate(fd, epochfs_FALLOC_FL_PUNCH_HOLE | epochfs_FALLOC_FL_KEEP_SIZE, HeaderSlot.size, HeaderSlot.size) == 0)
        close(fd)
        #expect(allocatedBytes(header) < 2 * HeaderSlot.size)
        _ = try LiveVolume(backing: backing)
        #expect(allocatedBytes(header) >= 2 * HeaderSlot.size)
    }

    @Test func rekeyAndCutoverSucceedOnAFullDisk() throws {
        let keys = try KeyFiles(epochs: 1...3)
        let disk = try SmallDisk(megabytes: 1)
        let backing = disk.path + "/backing"
        _ = try Volume.create(backing: backing, keySource: "file:\(keys.directory.path)/%d.key", epoch: 1, blockSize: 4096)
        disk.fill()
        let volume = try LiveVolume(backing: backing)
        try volume.rekey(to: 2)
        try volume.setRaftCutover(42)
        try volume.rekey(to: 3)
        let reopened = try LiveVolume(backing: backing).header
        #expect(reopened.epoch == 3 && reopened.slot.raftCutover == 42)
        withExtendedLifetime(disk) {}
    }
}
