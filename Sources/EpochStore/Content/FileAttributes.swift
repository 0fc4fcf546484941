import EpochFormat
import EpochIO

/// A file's attribute binding (docs/FORMAT.md §5.5, format 5), kept in its file record.
extension FileContent {
    /// Whether records of this volume bind attributes.
    var bindsAttributes: Bool { layout.version >= HeaderSlot.attributeBindingVersion }

    /// What the file record (read and checked if not yet known) binds of the attributes of the
    /// file open at `fd`; nil where nothing binds them: a volume older than format 5, or a file
    /// with no record (never written, S < H).
    func attributeBinding(_ fd: FileDescriptor) throws -> AttributeBinding? {
        guard bindsAttributes else { return nil }
        return try access.withReadLock {
            guard try io.size(fd) >= layout.dataOffset else { return nil }
            _ = try loadFileID(fd)
            return cache.withLock { $0.commits.record?.attributes }
        }
    }

    /// A record binding `binding` (sequence + 1), durable before the attributes change: from
    /// then on a power cut may leave the set before the change or after it, and the record
    /// accepts both. A commit prepared before this one is not written (its sequence is taken).
    func bindAttributes(_ binding: AttributeBinding, fd: FileDescriptor) throws {
        try exclusively {
            guard var record = cache.withLock({ $0.commits.record }) else { return }
            record.attributes = binding
            record.sequence += 1
            // An attribute change moves the ctime only, as on ext4.
            try writeRecordKeepingTimes(record, fd: fd)
            try syncMarking(fd, dataOnly: true)
        }
        noteChanged()
    }
}
