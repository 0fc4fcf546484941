import EpochFormat
import EpochIO
import Glibc

/// epochfs's extended attributes of one backing object as stored (docs/FORMAT.md §5.5): each
/// backing name `user.epochfs.…` with its sealed value, the set a record's attribute binding
/// names by its digest.
package struct StoredAttributes {
    /// Sealed values by backing name.
    package var values: [String: [UInt8]]
    /// The backing names in the order the backing file system lists them.
    package let names: [String]

    /// The attributes of the object open at `fd` (any descriptor, O_PATH too). One removed
    /// between the listing and its read is not in the set: changes go one attribute at a time,
    /// so what is read is the set before a change or after it.
    init(of fd: FileDescriptor, io: any BackingIO) throws {
        var listing = [UInt8](repeating: 0, count: BackingTree.maxXattrValue)
        let length = try listing.withUnsafeMutableBytes { try io.listxattr(fd, into: $0) }
        var values: [String: [UInt8]] = [:]
        let listed = listing.prefix(length).split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        for name in listed where name.hasPrefix(XattrCodec.backingPrefix) {
            var value = [UInt8](repeating: 0, count: BackingTree.maxXattrValue + 64)
            do {
                let count = try value.withUnsafeMutableBytes { try io.getxattr(fd, name: name, into: $0) }
                values[name] = Array(value.prefix(count))
            } catch let error as SystemError where error.errno == ENODATA {}
        }
        self.values = values
        names = listed.filter { values[$0] != nil }
    }

    package var digest: [UInt8] { AttributeBinding.digest(of: values.map { (name: $0.key, value: $0.value) }) }
}
