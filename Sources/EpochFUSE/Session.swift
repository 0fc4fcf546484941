import CFuse3
import EpochHeader
import EpochIO
import EpochStore
import EpochSystem
import EpochVolume
import Foundation
import Glibc
import Logging
import Synchronization

/// Mounts a volume with libfuse3's low-level API and serves it on a multithreaded loop until
/// it is unmounted (`fusermount3 -u`) or the process gets SIGINT/SIGTERM/SIGHUP.
public enum MountSession {
    public struct Options: Sendable {
        public var foreground = false
        /// `-o` options for libfuse and the kernel (e.g. `allow_other`, `ro`).
        public var fuseOptions: [String] = []
        public var maxThreads: UInt32 = 16
        /// FUSE over io_uring where the kernel offers it (`-o io_uring=off` turns it off).
        public var ioUring = true
        /// Requests, error replies, bytes and durations counted for the metrics (`-o
        /// request_metrics=off` leaves them out; the volume's own counters stay).
        public var requestMetrics = true
        /// `-o anchor[=DIRECTORY]`: the volume's anchor on this machine (docs/FORMAT.md §3.8).
        public var anchoring: AnchorOptions?

        public init() {}
    }

    /// Blocks until unmounted. Throws if the volume cannot be opened or mounted.
    public static func run(backing: String, mountpoint: String, journal: HeaderJournal, options: Options) throws {
        // The kernel has applied the caller's umask to every mode it sends; ours must not
        // narrow it again (a new file asked as 0642 stays 0642).
        umask(0)
        // Every node the kernel holds keeps an O_PATH descriptor (as in passthrough_hp): a tree
        // of thousands of files needs more than the usual soft limit of 1,024.
        raiseOpenFileLimit()
        // Held for the daemon's whole life (the descriptor survives the fork of daemonizing):
        // no second mount and no offline command writes the backing dir meanwhile.
        let owner = try VolumeOwner(claiming: backing, for: .mounting(pid: getpid(), mountpoint: mountpoint))
        defer { withExtendedLifetime(owner) {} }
        let volume = try LiveVolume(backing: backing, journal: journal, anchoring: options.anchoring)
        try volume.requireCurrentFormat()
        let frontend = try Frontend(volume: volume, keepingAccessTimes: options.fuseOptions.contains("noatime"),
                                    requestMetrics: options.requestMetrics)
        let logger = Logger(label: "epochfs.mount")

        var fuseOptions = ["fsname=epochfs:\(backing)", "subtype=epochfs"] + options.fuseOptions
        // As with gocryptfs: when others may enter, the kernel checks permissions for us.
        if options.fuseOptions.contains("allow_other") { fuseOptions.append("default_permissions") }
        var operations = makeOperations()
        let words: [String] = ["epochfs", "-o", fuseOptions.joined(separator: ",")]
        // libfuse keeps argv for the session's life; it is freed after the loop ends.
        let argv = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: words.count + 1)
        for (index, word) in words.enumerated() { argv[index] = strdup(word) }
        argv[words.count] = nil
        defer {
            for index in 0..<words.count { free(argv[index]) }
            argv.deallocate()
        }
        var fuseArgs = fuse_args(argc: Int32(words.count), argv: argv, allocated: 0)
        // fuse_session_new replaces the arguments with its own allocated copy.
        defer { fuse_opt_free_args(&fuseArgs) }

        let userdata = Unmanaged.passRetained(frontend)
        defer { userdata.release() }
        guard let session = epochfs_session_new(&fuseArgs, &operations, MemoryLayout<fuse_lowlevel_ops>.size,
                                                userdata.toOpaque()) else {
            throw SystemError("fuse_session_new", path: mountpoint, errno: EINVAL)
        }
        defer { fuse_session_destroy(session) }
        guard fuse_set_signal_handlers(session) == 0 else { throw SystemError("signal handlers", path: mountpoint) }
        defer { fuse_remove_signal_handlers(session) }
        // A trust decision: always shown, and before the mount appears, so whoever waits for
        // the mount finds it logged.
        if let note = volume.anchor?.note { logger.warning("anchor: \(note)") }
        guard fuse_session_mount(session, mountpoint) == 0 else { throw SystemError("mount", path: mountpoint, errno: EIO) }
        defer { fuse_session_unmount(session) }
        var io = fuse_custom_io()
        io.read = { fd, buffer, length, _ in DeviceIO.read(fd, buffer, length) }
        io.writev = { fd, vectors, count, _ in DeviceIO.writev(fd, vectors, count) }
        // The same descriptor, now read and written through the hooks.
        guard fuse_session_custom_io(session, &io, fuse_session_fd(session)) == 0 else {
            throw SystemError("fuse_session_custom_io", path: mountpoint, errno: EINVAL)
        }
        frontend.readahead.prepare(mountpoint: mountpoint)
        logger.info("mounted", metadata: ["backing": "\(backing)", "mountpoint": "\(mountpoint)", "epoch": "\(volume.header.epoch)"])
        fuse_daemonize(options.foreground ? 1 : 0)
        owner.record(.mount(pid: getpid(), mountpoint: mountpoint))
        // After daemonizing: the queues' threads would not survive its fork.
        if options.ioUring {
            DeviceIO.ring.withLock { $0 = RingTransport.start(session: session, status: frontend.control.transport, logger: logger) }
        } else {
            logger.notice("FUSE transport: /dev/fuse (io_uring=off)")
        }

        let config = fuse_loop_cfg_create()
        defer { fuse_loop_cfg_destroy(config) }
        fuse_loop_cfg_set_max_threads(config, options.maxThreads)
        let status = epochfs_session_loop_mt(session, config)
        DeviceIO.ring.withLock { ring in
            ring?.stop()
            ring = nil
        }
        frontend.control.reencryption.stop() // resumed by the next `reencrypt start`
        // Nothing is buffered in this process; make what the backing fs holds durable too.
        try? frontend.tree.syncAll()
        // Then a record of everything changed since its last commit, fsync'd or not.
        if let (committed, failed) = try? frontend.tree.commitUncommitted(), committed + failed > 0 {
            logger.info("committed at unmount", metadata: ["files and directories": "\(committed)", "failed": "\(failed)"])
        }
        try? volume.anchor?.cover()
        logger.info("unmounting", metadata: ["mountpoint": "\(mountpoint)", "loop status": "\(status)"])
    }

    /// Raises the soft limit on open descriptors to the hard one.
    private static func raiseOpenFileLimit() {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    }

    private static func makeOperations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, connection in Operations.negotiate(userdata, connection!) }
        // No flush: writes reach the backing file before they are answered, so a close has
        // nothing to flush. Left unset, it is answered ENOSYS once and the kernel stops sending it.
        ops.lookup = { Operations.lookup($0, $1, $2) }
        ops.forget = { Operations.forget($0, $1, $2) }
        ops.forget_multi = { Operations.forgetMulti($0, $1, $2) }
        ops.getattr = { Operations.getattr($0, $1, $2) }
        ops.setattr = { Operations.setattr($0, $1, $2, $3, $4) }
        ops.readlink = { Operations.readlink($0, $1) }
        ops.mknod = { Operations.mknod($0, $1, $2, $3, $4) }
        ops.mkdir = { Operations.mkdir($0, $1, $2, $3) }
        ops.unlink = { Operations.unlink($0, $1, $2) }
        ops.rmdir = { Operations.rmdir($0, $1, $2) }
        ops.symlink = { Operations.symlink($0, $1, $2, $3) }
        ops.rename = { Operations.rename($0, $1, $2, $3, $4, $5) }
        ops.link = { Operations.link($0, $1, $2, $3) }
        ops.open = { Operations.open($0, $1, $2) }
        ops.read = { Operations.read($0, $1, $2, $3, $4) }
        ops.write = { Operations.write($0, $1, $2, $3, $4, $5) }
        ops.release = { Operations.release($0, $1, $2) }
        ops.fsync = { Operations.fsync($0, $1, $2, $3) }
        ops.opendir = { Operations.opendir($0, $1, $2) }
        ops.readdir = { Operations.readdir($0, $1, $2, $3, $4) }
        ops.readdirplus = { Operations.readdirplus($0, $1, $2, $3, $4) }
        ops.releasedir = { Operations.releasedir($0, $1, $2) }
        ops.fsyncdir = { Operations.fsyncdir($0, $1, $2, $3) }
        ops.statfs = { Operations.statfs($0, $1) }
        ops.create = { Operations.create($0, $1, $2, $3, $4) }
        ops.fallocate = { Operations.fallocate($0, $1, $2, $3, $4, $5) }
        ops.setxattr = { Operations.setxattr($0, $1, $2, $3, $4, $5) }
        ops.getxattr = { Operations.getxattr($0, $1, $2, $3) }
        ops.listxattr = { Operations.listxattr($0, $1, $2) }
        ops.removexattr = { Operations.removexattr($0, $1, $2) }
        return ops
    }
}
