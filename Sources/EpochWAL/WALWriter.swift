import EpochIO
import Glibc

/// Writes etcd-format WAL segments the way etcd 3.4's `wal.WAL` does (`Create`, `Save`,
/// `SaveSnapshot`, `cut`), so etcd's own reader accepts them:
/// - the first segment `0000000000000000-0000000000000000.wal` starts with crc(0), the
///   metadata record and snapshot{index 0, term 0};
/// - `save` appends the entries, then the HardState unless it is empty, and cuts when the
///   segment has reached `segmentSize`;
/// - a cut truncates the old tail to its exact length, and the next segment,
///   `<seq+1>-<last entry index+1>.wal`, starts with the running crc, the metadata and the
///   last non-empty HardState; it is written as `<name>.tmp`, synced and renamed, and the
///   directory is synced.
/// Records etcd 3.4 would reject (10 MiB and over) are refused. Not thread-safe.
public final class WALWriter {
    public struct Options: Sendable {
        /// etcd's `SegmentSizeBytes`: 64,000,000 bytes, not 64 MiB.
        public var segmentSize: Int64 = 64_000_000
        /// Extend each new segment to `segmentSize` up front with ftruncate (sparse; etcd's own
        /// fallback where fallocate is unsupported). The space reads as zeros, which ends the
        /// segment for readers.
        public var preallocate = false
        /// fdatasync after every save and snapshot.
        public var sync = true

        public init(segmentSize: Int64 = 64_000_000, preallocate: Bool = false, sync: Bool = true) {
            self.segmentSize = segmentSize
            self.preallocate = preallocate
            self.sync = sync
        }
    }

    /// etcd 3.4's decoder rejects a frame whose record plus padding reaches 10 MiB.
    public static let frameBodyLimit = 10 * 1024 * 1024

    public let directory: String
    public let options: Options
    public private(set) var segments: [WALSegmentName] = []
    private let metadata: [UInt8]
    private let io: any BackingIO
    private var descriptor: FileDescriptor?
    private var tailPath = ""
    private var offset: Int64 = 0
    private var crc = CRC32C()
    private var lastIndex: UInt64 = 0
    private var state = HardState()
    private var batch: [UInt8] = []

    /// Starts a new log in `directory` (created 0700 if missing), which must hold no segment.
    public init(directory: String, metadata: [UInt8], options: Options = Options(), io: any BackingIO = SystemIO()) throws(WALError) {
        self.directory = directory
        self.metadata = metadata
        self.options = options
        self.io = io
        try walIO(directory) {
            do {
                try io.mkdirat(directory, in: .currentDirectory, mode: 0o700)
            } catch let error as SystemError where error.errno == EEXIST {}
        }
        do throws(WALError) {
            _ = try WALSegmentName.list(directory: directory, io: io)
            throw .segmentsExist(directory: directory)
        } catch .noSegments {
            // An empty directory, as required.
        }
        try openSegment(WALSegmentName(sequence: 0, index: 0))
        try appendRecord(.crc, data: nil)
        try appendRecord(.metadata, data: metadata)
        try appendRecord(.snapshot, data: WALSnapshot().encoded)
        try flush(sync: true)
        try publishSegment()
    }

    deinit {
        if let descriptor { io.close(descriptor) }
    }

    /// The running CRC-32C, as the next segment's crc record would carry it.
    public var runningCRC: UInt32 { crc.value }

    /// etcd's `Save`: entries, then `hardState` unless it is empty; cuts at the segment size.
    public func save(hardState: HardState = HardState(), entries: [RaftEntry]) throws(WALError) {
        if hardState.isEmpty, entries.isEmpty { return }
        let (savedCRC, savedLastIndex) = (crc, lastIndex)
        do {
            for entry in entries {
                try appendRecord(.entry, data: entry.encoded)
                lastIndex = entry.index
            }
            if !hardState.isEmpty { try appendRecord(.state, data: hardState.encoded) }
        } catch {
            // Nothing of a refused batch reaches the file or the chain.
            (crc, lastIndex) = (savedCRC, savedLastIndex)
            batch.removeAll(keepingCapacity: true)
            throw error
        }
        if !hardState.isEmpty { state = hardState }
        try flush(sync: options.sync)
        if offset >= options.segmentSize { try cut() }
    }

    /// etcd's `SaveSnapshot`: a snapshot record, always synced.
    public func saveSnapshot(_ snapshot: WALSnapshot) throws(WALError) {
        try appendRecord(.snapshot, data: snapshot.encoded)
        lastIndex = max(lastIndex, snapshot.index)
        try flush(sync: true)
    }

    /// Syncs and closes the tail. Preallocated space stays, as etcd leaves it.
    public func close() throws(WALError) {
        guard let descriptor else { return }
        try flush(sync: true)
        io.close(descriptor)
        self.descriptor = nil
    }

    // MARK: - Segments

    private func openSegment(_ name: WALSegmentName) throws(WALError) {
        let path = directory + "/" + name.fileName + ".tmp"
        tailPath = path
        let descriptor = try walIO(path) { try io.open(path, in: .currentDirectory, flags: O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o600) }
        self.descriptor = descriptor
        if options.preallocate { try walIO(path) { try io.ftruncate(descriptor, size: Int(options.segmentSize)) } }
        segments.append(name)
        offset = 0
    }

    /// Renames the new tail from `.tmp` to its name and syncs the directory.
    private func publishSegment() throws(WALError) {
        let path = directory + "/" + segments.last!.fileName
        try walIO(tailPath) { try io.renameat(tailPath, in: .currentDirectory, to: path, in: .currentDirectory, flags: 0) }
        tailPath = path
        try walIO(directory) { try io.withOpened(directory, in: .currentDirectory, flags: O_RDONLY | O_DIRECTORY) { try io.fsync($0) } }
    }

    private func cut() throws(WALError) {
        let descriptor = descriptor!
        try walIO(tailPath) { try io.ftruncate(descriptor, size: Int(offset)) }
        try flush(sync: true)
        io.close(descriptor)
        self.descriptor = nil
        try openSegment(WALSegmentName(sequence: segments.last!.sequence + 1, index: lastIndex + 1))
        try appendRecord(.crc, data: nil)
        try appendRecord(.metadata, data: metadata)
        if !state.isEmpty { try appendRecord(.state, data: state.encoded) }
        try flush(sync: true)
        try publishSegment()
    }

    // MARK: - Records

    /// Frames one record into the batch: etcd's encoder feeds `data` to the running CRC and
    /// stores the result (a crc record, with no data, stores the running value itself).
    private func appendRecord(_ type: WALRecordType, data: [UInt8]?) throws(WALError) {
        var next = crc
        if let data { next.update(data) }
        var record = ProtobufWriter()
        record.appendVarint(field: 1, UInt64(type.rawValue))
        record.appendVarint(field: 2, UInt64(next.value))
        if let data { record.appendBytes(field: 3, data) }
        let padding = Frame.padding(forRecordLength: record.bytes.count)
        guard record.bytes.count + padding < Self.frameBodyLimit else {
            throw .recordTooLarge(length: record.bytes.count, limit: Self.frameBodyLimit - padding - 1)
        }
        crc = next
        withUnsafeBytes(of: Frame.lengthWord(recordLength: record.bytes.count).littleEndian) { batch.append(contentsOf: $0) }
        batch.append(contentsOf: record.bytes)
        batch.append(contentsOf: repeatElement(0, count: padding))
    }

    private func flush(sync: Bool) throws(WALError) {
        let descriptor = descriptor!
        try walIO(tailPath) { try io.pwriteFully(descriptor, batch, at: Int(offset)) }
        offset += Int64(batch.count)
        batch.removeAll(keepingCapacity: true)
        if sync { try walIO(tailPath) { try io.fdatasync(descriptor) } }
    }
}
