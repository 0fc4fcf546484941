import EpochIO
import Glibc

extension BackingTree {
    /// The plaintext path of `node`, for a log line: the backing path the kernel keeps for its
    /// descriptor (one of a hard link's names), each name decrypted from the root down; from
    /// the first that does not decrypt on, `backing:` and the stored names.
    public func plaintextPath(of node: BackingNode) -> String {
        let io = volume.io
        guard let target = try? io.readlinkat("/proc/self/fd/\(node.fd.rawValue)", in: .currentDirectory) else { return "?" }
        let path = String(decoding: target, as: UTF8.self)
        guard path.hasPrefix(volume.backing + "/") else { return "/" }
        let names = path.dropFirst(volume.backing.count + 1).split(separator: "/").map(String.init)
        var plain: [String] = []
        var directory = root
        for (index, name) in names.enumerated() {
            do {
                var encrypted = name
                if NameCodec.isLongName(name) {
                    encrypted = try NameCodec.longName(ofEntry: name, sideFile: try io.readFile(name + NameCodec.longNameSuffix, in: directory.fd, limit: 4096))
                }
                plain.append(String(decoding: try volume.keys.names.decrypt(encrypted, directoryIV: try directory.directoryIV()), as: UTF8.self))
                if index < names.count - 1 { directory = try backingNode(name, in: directory.fd).node }
            } catch {
                return "/" + (plain + ["backing:" + names[index...].joined(separator: "/")]).joined(separator: "/")
            }
        }
        return "/" + plain.joined(separator: "/")
    }
}
