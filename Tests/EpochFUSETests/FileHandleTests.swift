import CLinux
import Foundation
import Glibc
import Support
import Testing

/// File handles on the mount (issue 18 item 6, xfstests generic/426, 467, 477, 756, 777): a
/// handle from `name_to_handle_at` opens its file or directory with `open_by_handle_at` after
/// the kernel dropped the inode, and after a remount; once the file is gone, ESTALE. What an
/// NFS export of the mount needs. The backing dir is on ext4 (/tmp), whose 8-byte handles are
/// the mount's node ids.
@Suite(.serialized) struct FileHandleTests {
    struct Handle {
        var type: Int32 = 0
        var bytes = [UInt8](repeating: 0, count: 128)
        var count = 0
    }

    func handle(of path: String) throws -> Handle {
        let fd = open(path, epochfs_O_PATH)
        guard fd >= 0 else { throw TestFailure("open \(path): errno \(errno)") }
        defer { close(fd) }
        var handle = Handle()
        handle.count = Int(epochfs_name_to_handle(fd, &handle.type, &handle.bytes, UInt32(handle.bytes.count)))
        guard handle.count > 0 else { throw TestFailure("name_to_handle_at \(path): errno \(errno)") }
        return handle
    }

    /// What `open_by_handle_at` on the mount gives, or the errno: a directory's path (it is
    /// reconnected to the tree), a file's inode number and content (a file opened by handle
    /// while no name of it is cached has no path: "/", as on any file system).
    func openByHandle(_ handle: Handle, on mountpoint: String, flags: Int32) -> String {
        let mount = open(mountpoint, O_RDONLY | O_DIRECTORY)
        defer { close(mount) }
        let fd = epochfs_open_by_handle(mount, handle.type, handle.bytes, UInt32(handle.count), flags)
        guard fd >= 0 else { return "errno \(errno)" }
        defer { close(fd) }
        guard flags & O_DIRECTORY == 0 else { return (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")) ?? "?" }
        var info = stat()
        fstat(fd, &info)
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = read(fd, &buffer, buffer.count)
        return "inode \(info.st_ino): " + String(decoding: buffer.prefix(max(count, 0)), as: UTF8.self)
    }

    func inode(_ path: String) -> String {
        var info = stat()
        return stat(path, &info) == 0 ? "inode \(info.st_ino): " : "errno \(errno)"
    }

    func dropInodes() throws {
        sync()
        try Data("2\n".utf8).write(to: URL(fileURLWithPath: "/proc/sys/vm/drop_caches"))
    }

    @Test func aHandleOpensItsFileAfterTheKernelDroppedTheInodeAndAfterARemount() throws {
        let volume = try MountedVolume()
        defer { volume.destroy() }
        try FileManager.default.createDirectory(atPath: volume.path("d/e"), withIntermediateDirectories: true)
        try Data("kept content".utf8).write(to: URL(fileURLWithPath: volume.path("d/e/f")))
        let file = try handle(of: volume.path("d/e/f"))
        let directory = try handle(of: volume.path("d/e"))
        let opened = inode(volume.path("d/e/f")) + "kept content"

        try dropInodes()
        #expect(openByHandle(file, on: volume.mountpoint, flags: O_RDONLY) == opened)
        try dropInodes()
        // A directory is reconnected to the tree through its parents ("..").
        #expect(openByHandle(directory, on: volume.mountpoint, flags: O_RDONLY | O_DIRECTORY) == volume.path("d/e"))

        // The node ids are the backing files' handles: the same after a remount.
        volume.unmount()
        try volume.mount()
        #expect(openByHandle(file, on: volume.mountpoint, flags: O_RDONLY) == opened)

        // Gone is gone once the kernel let go of the inode. (While it still caches the unlinked
        // inode, the kernel itself may answer by handle: when it lets go is its own timing.)
        try FileManager.default.removeItem(atPath: volume.path("d/e/f"))
        try dropInodes()
        #expect(openByHandle(file, on: volume.mountpoint, flags: O_RDONLY) == "errno \(ESTALE)")
        // A new file is not the old one's handle, though its backing inode number may be reused.
        try Data("new".utf8).write(to: URL(fileURLWithPath: volume.path("d/e/g")))
        #expect(try handle(of: volume.path("d/e/g")).bytes != file.bytes)
    }
}
