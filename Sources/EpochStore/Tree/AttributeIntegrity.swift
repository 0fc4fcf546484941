import CLinux
import EpochFormat
import EpochIO
import Glibc

/// The attribute binding (docs/FORMAT.md §5.5, format 5): a read of a node's attributes checks
/// the set it finds against the node's record, and a change first makes a record durable that
/// accepts both the set before it and the set after it.
extension BackingTree {
    /// The `user.` attributes of `node` as stored, checked against its record: a set the record
    /// does not bind is an integrity error (EIO).
    package func checkedAttributes(_ node: BackingNode) throws -> StoredAttributes {
        try withAttributeRecord(of: node, writable: false) { record in
            let stored = try StoredAttributes(of: node.fd, io: io)
            try check(stored, of: node, against: record.binding)
            return stored
        }
    }

    /// Stores the sealed value `value` of backing name `name` on `node` (nil removes it), with
    /// the flags of setxattr(2), once its record accepts the set it leaves. One attribute at a
    /// time: a reader (or a commit) listing the set while it changes sees it before or after,
    /// never a mix. The caller holds `xattrChanges`.
    func changeAttribute(_ node: BackingNode, name: String, value: [UInt8]?, flags: Int32 = 0) throws {
        try withAttributeRecord(of: node, writable: true) { record in
            let stored = try StoredAttributes(of: node.fd, io: io)
            try check(stored, of: node, against: record.binding)
            let exists = stored.values[name] != nil
            if value == nil || flags & epochfs_XATTR_REPLACE != 0, !exists { throw SystemError("xattr", path: "", errno: ENODATA) }
            if flags & epochfs_XATTR_CREATE != 0, exists { throw SystemError("setxattr", path: "", errno: EEXIST) }
            if let binding = record.binding {
                var next = stored
                next.values[name] = value
                let current = stored.digest
                // The set found becomes the committed one: it must be durable first.
                if binding.committed != current { try record.sync() }
                try record.bind(binding.changing(from: current, to: next.digest))
            }
            if let value {
                try value.withUnsafeBytes { try io.setxattr(node.fd, name: name, value: $0, flags: flags) }
            } else {
                try io.removexattr(node.fd, name: name)
            }
        }
    }

    /// Binds the attributes `node` holds now, trusting them (fsck --repair after a deliberate
    /// restore or its own removals): made durable, then committed. False where nothing binds.
    package func rebindAttributes(_ node: BackingNode) throws -> Bool {
        try xattrChanges.withLock { _ in
            try withAttributeRecord(of: node, writable: true) { record in
                guard record.binding != nil else { return false }
                let found = try StoredAttributes(of: node.fd, io: io).digest
                try record.sync()
                try record.bind(AttributeBinding(committed: found))
                return true
            }
        }
    }

    private func check(_ stored: StoredAttributes, of node: BackingNode, against binding: AttributeBinding?) throws {
        guard let binding, !binding.accepts(stored.digest) else { return }
        if let content = node.content { throw content.failIntegrity(.attributes) }
        throw DirectoryError.attributes
    }

    /// Where `node`'s binding is kept, for the time of `body`: its file record (through a
    /// descriptor of the file) or its directory record. No binding where the volume is older
    /// than format 5, for a file with no record, and for other types.
    private func withAttributeRecord<R>(of node: BackingNode, writable: Bool, _ body: (AttributeRecord) throws -> R) throws -> R {
        if let content = node.content, content.bindsAttributes {
            // Quietly: reading the record is no access of the file's.
            let handle = try openQuietly(SystemIO.procPath(node.fd), in: .currentDirectory, flags: (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)
            defer { io.close(handle) }
            return try body(AttributeRecord(
                binding: try content.attributeBinding(handle),
                sync: { try self.io.fsync(handle) },
                bind: { try content.bindAttributes($0, fd: handle) }))
        }
        if let commits = node.directory, ivs.bindsAttributes {
            let binding = try commits.record(in: node.fd, ivs: ivs).record.attributes ?? .unbound
            return try body(AttributeRecord(
                binding: binding,
                sync: { try self.syncDirectory(node) },
                bind: { binding in
                    try commits.holdingChanges {
                        let (iv, record) = try commits.record(in: node.fd, ivs: self.ivs)
                        var next = record
                        next.attributes = binding
                        next.sequence += 1
                        try self.ivs.replaceRecord(next, iv: iv, in: node.fd)
                        try self.syncDirectory(node)
                        commits.adopt(next)
                        commits.noteDurable(next.sequence)
                    }
                    self.volume.noteEntriesChanged(in: node) // the next commit binds the set as found
                }))
        }
        return try body(AttributeRecord(binding: nil, sync: {}, bind: { _ in }))
    }

    private func syncDirectory(_ node: BackingNode) throws {
        let handle = try openDirectory(node)
        defer { io.close(handle) }
        try io.fsync(handle)
    }
}

/// A node's attribute binding and how to change it (`BackingTree.withAttributeRecord`).
struct AttributeRecord {
    /// nil: nothing binds the node's attributes.
    let binding: AttributeBinding?
    /// Makes the node's attributes durable.
    let sync: () throws -> Void
    /// Writes a record with this binding, durably.
    let bind: (AttributeBinding) throws -> Void
}
