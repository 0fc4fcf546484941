import ArgumentParser
import EpochFormat
import EpochHeader
import EpochReconcile
import EpochSystem
import EpochVolume
import Foundation
import Logging
import Synchronization

@main
struct EpochFS: ParsableCommand {
    /// The release; the one place it is written.
    static let version = "0.19.0"

    static let configuration = CommandConfiguration(
        commandName: "epochfs",
        abstract: "An encrypted FUSE filesystem with epoch-keyed blocks and atomic rekey.",
        discussion: """
            Exit codes: 0 success; 1 failure (I/O, damaged header, bad input, problems found by \
            fsck); 2 key failure (wrong key, key source failed or timed out); 3 refused (rekey \
            below the current epoch, restore of an older header without --yes, retire of an \
            epoch still in use, active or not in the keyring); 4 busy (the volume is mounted, the message names the mount \
            point, or another command that writes it runs); 64 usage error (including a malformed \
            key source spec).
            """,
        version: "epochfs \(version) (writes volume format \(HeaderSlot.formatVersion), docs/FORMAT.md)",
        subcommands: [Init.self, Info.self, Rekey.self, Reencrypt.self, Retire.self, Mount.self, Status.self, Fsck.self, ExportTree.self, Header.self, Upgrade.self,
                      WAL.self, Reconcile.self])

    /// No command: the usage on stderr and a usage error, so that a script that lost its
    /// arguments does not pass.
    func run() throws {
        printError(Self.helpMessage())
        throw ExitCode(64)
    }
}

/// Options every command that opens an existing volume takes.
struct VolumeOptions: ParsableArguments {
    @Argument(help: "The backing directory (ciphertext).")
    var backing: String

    @Option(help: ArgumentHelp("Key source, overriding the one remembered in the volume.", valueName: "SPEC"))
    var keySource: String?

    @Flag(name: .shortAndLong, help: "Log what the command does on stderr.")
    var verbose = false

    /// Takes ownership of the backing directory for the offline command `name` (which writes
    /// it), until the returned owner is released; a mounted volume is refused naming its mount.
    func claim(for name: String) throws -> VolumeOwner {
        try VolumeOwner(claiming: backing, for: .command(pid: getpid(), name: name))
    }

    func openJournal() throws -> HeaderJournal {
        bootstrapLogging(verbose: verbose)
        return try Volume.journal(backing: backing, keySourceOverride: keySource)
    }
}

/// Log lines go to stderr, or with `syslog` (a daemonized mount, whose stderr is /dev/null)
/// to syslog(3). The first call of a process decides; later ones change nothing.
func bootstrapLogging(verbose: Bool, syslog: Bool = false) {
    guard !loggingBootstrapped.exchange(true, ordering: .relaxed) else { return }
    LoggingSystem.bootstrap { label in
        var handler: any LogHandler = syslog ? SyslogLogHandler(label: label) : StreamLogHandler.standardError(label: label)
        handler.logLevel = verbose ? .info : .warning
        return handler
    }
}

private let loggingBootstrapped = Atomic(false)

/// Runs a command body, turning library errors into a message on stderr and the documented
/// exit code.
func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as ExitCode {
        throw error
    } catch let error as ValidationError {
        throw error
    } catch {
        printError("epochfs: \(error)")
        throw ExitCode(exitCode(for: error))
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Exit codes (documented in the command's discussion and docs/OPERATIONS.md), as `FailureKind` gives
/// them; a live command's from the errno the mount answered with.
func exitCode(for error: any Error) -> Int32 {
    if case EpochSourceError.badSpec = error { return 64 }
    if let control = error as? ControlCommandFailed { return FailureKind(controlErrno: control.failure.errno).exitCode }
    return FailureKind(error).exitCode
}
