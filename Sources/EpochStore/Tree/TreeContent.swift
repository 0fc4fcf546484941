import CLinux
import EpochCrypto
import EpochFormat
import EpochIO
import Glibc

/// File content through the tree (docs/FORMAT.md §6), and the durability of side files (§1.4).
extension BackingTree {
    /// Opens the regular file (or other non-directory) `node` with `flags`; O_TRUNC empties it.
    public func open(_ node: BackingNode, flags: Int32, caller: Caller) throws -> FileDescriptor {
        let fd = try reopen(node, flags: Self.backingFlags(flags))
        guard let content = node.content else { return fd }
        do {
            if flags & O_TRUNC != 0 {
                try dropSetIDBits(fd, caller: caller)
                try content.truncate(fd: fd, to: 0)
                changes.noteChanged(node)
            } else {
                try content.reloadHeader(fd: fd)
            }
        } catch {
            io.close(fd)
            throw error
        }
        return fd
    }

    public func close(_ handle: FileDescriptor) { io.close(handle) }

    /// Reads up to `count` plaintext bytes at `offset` through `handle`, handed to `deliver`.
    public func read<R>(_ node: BackingNode, through handle: FileDescriptor, offset: Int, count: Int,
                        _ deliver: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard offset >= 0, count >= 0 else { throw SystemError("read", path: "", errno: EINVAL) }
        return try content(node).read(fd: handle, offset: offset, count: count, deliver)
    }

    /// Writes `data` at `offset` (at the end when nil: O_APPEND), as `caller`. Returns how
    /// many bytes it wrote: as on ext4, a write reaching past the largest file is cut short
    /// there, and one starting at or past it fails with EFBIG.
    @discardableResult
    public func write(_ node: BackingNode, through handle: FileDescriptor, offset: Int?, data: UnsafeRawBufferPointer,
                      caller: Caller) throws -> Int {
        let content = try content(node)
        let count = try writableCount(at: offset ?? content.size(fd: handle), data.count)
        try dropSetIDBits(handle, caller: caller)
        try content.write(fd: handle, offset: offset, data: UnsafeRawBufferPointer(rebasing: data[0..<count]))
        changes.noteChanged(node)
        return count
    }

    /// Sets the plaintext size, through `handle` or, for a truncate by path, a descriptor of its own.
    public func truncate(_ node: BackingNode, to size: Int, through handle: FileDescriptor?, caller: Caller) throws {
        guard let content = node.content else { throw SystemError("truncate", path: "", errno: EINVAL) }
        try checkRange(offset: size, length: 0, "truncate")
        let fd = try handle ?? reopen(node, flags: O_RDWR | O_CLOEXEC)
        defer { if handle == nil { io.close(fd) } }
        try dropSetIDBits(fd, caller: caller)
        try content.truncate(fd: fd, to: size)
        changes.noteChanged(node)
    }

    /// fallocate(2) on the plaintext (FileContent.allocate).
    public func allocate(_ node: BackingNode, through handle: FileDescriptor, mode: Int32, offset: Int, length: Int,
                         caller: Caller) throws {
        // Every mode, as the kernel checks it for ext4 before the file system sees the call.
        try checkRange(offset: offset, length: length, "fallocate")
        let content = try content(node)
        try dropSetIDBits(handle, caller: caller)
        try content.allocate(fd: handle, mode: mode, offset: offset, length: length)
        changes.noteChanged(node)
    }

    /// fsync(2) or fdatasync(2) of a handle of `node` (a file or directory), after the side
    /// files written since the last one; then a round of the volume's anchor, if it has one.
    public func sync(_ handle: FileDescriptor, of node: BackingNode, dataOnly: Bool) throws {
        if node.fileType == S_IFDIR {
            try commitDirectory(node, through: handle)
        } else {
            try syncSideFiles()
            if let content = node.content {
                try content.sync(fd: handle, dataOnly: dataOnly)
            } else {
                try dataOnly ? io.fdatasync(handle) : io.fsync(handle)
            }
        }
        try volume.anchor?.cover()
    }

    /// Makes every side file written so far durable, with its directory entry.
    func syncSideFiles() throws {
        let pending = unsynced.withLock { list in
            defer { list = [] }
            return list
        }
        guard !pending.isEmpty else { return }
        do {
            if pending.count <= Self.unsyncedOneByOne {
                for side in pending {
                    try io.fsync(side.file)
                    try io.fsync(side.directory)
                }
            } else {
                try syncAll()
            }
        } catch {
            unsynced.withLock { $0 = pending + $0 } // still to do: the next fsync tries again
            throw error
        }
        for side in pending {
            io.close(side.file)
            io.close(side.directory)
        }
    }

    /// Holds the side file `name` just written in the directory whose O_PATH descriptor is
    /// `directory` until the next fsync of anything. Read-only descriptors do for fsync, and
    /// hold nothing of the backing dir open for writing.
    func awaitSync(_ name: String, in directory: FileDescriptor) throws {
        let file = try io.open(name, in: directory, flags: O_RDONLY | O_NOFOLLOW | O_CLOEXEC, mode: 0)
        let containing: FileDescriptor
        do {
            containing = try openForSync(directory)
        } catch {
            io.close(file)
            throw error
        }
        awaitSync(file, in: containing)
    }

    /// Holds a side file just written (open at `file`, in the directory open at `directory`)
    /// until the next fsync of anything; takes over both descriptors.
    func awaitSync(_ file: FileDescriptor, in directory: FileDescriptor) {
        let count = unsynced.withLock { list in
            list.append(UnsyncedSideFile(file: file, directory: directory))
            return list.count
        }
        // A failure here is the next fsync's to report: it tries again.
        if count > Self.unsyncedLimit { try? syncSideFiles() }
    }

    /// Opens the directory whose O_PATH descriptor is `directory`, for an fsync.
    func openForSync(_ directory: FileDescriptor) throws -> FileDescriptor {
        try io.open(".", in: directory, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC, mode: 0)
    }
}
