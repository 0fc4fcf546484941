import Glibc

/// Raw entries of a backing directory.
public enum BackingDirectory {
    public struct Entry: Sendable {
        public let name: String
        public let inode: UInt64
        /// `d_type` (DT_REG, DT_DIR, ...).
        public let type: UInt8
    }

    /// Every entry of the directory open (readable) at `fd`, except "." and "..".
    public static func names(fd: Int32) throws -> [Entry] {
        let own = dup(fd)
        guard own >= 0, let stream = fdopendir(own) else {
            let failure = SystemError("opendir", path: "")
            if own >= 0 { close(own) }
            throw failure
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var entries: [Entry] = []
        while true {
            Glibc.errno = 0
            guard let raw = readdir(stream) else {
                if Glibc.errno != 0 { throw SystemError("readdir", path: "") }
                return entries
            }
            let name = withUnsafeBytes(of: raw.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name == "." || name == ".." { continue }
            entries.append(Entry(name: name, inode: UInt64(raw.pointee.d_ino), type: raw.pointee.d_type))
        }
    }

    /// Every entry of the directory at `path`, except "." and "..".
    public static func names(path: String) throws -> [Entry] {
        let fd = retryingEINTR { open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        guard fd >= 0 else { throw SystemError("opendir", path: path) }
        defer { close(fd) }
        return try names(fd: fd)
    }

    /// Reads a long name's side file: the full encrypted name.
    public static func longName(_ sideFile: String, in directoryFD: Int32) throws -> String {
        let fd = openat(directoryFD, sideFile, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw SystemError("open", path: sideFile) }
        defer { close(fd) }
        return String(decoding: try BackingFile.readAll(fd: fd, limit: 4096), as: UTF8.self)
    }
}
