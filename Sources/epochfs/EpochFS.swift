import ArgumentParser
import EpochReconcile
import EpochVolume
import Foundation
import Logging

@main
struct EpochFS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "epochfs",
        abstract: "An encrypted FUSE filesystem with epoch-keyed blocks and atomic rekey.",
        discussion: """
            Exit codes: 0 success; 1 failure (I/O, damaged header, bad input, problems found by \
            fsck); 2 key failure (wrong key, key source failed or timed out); 3 refused (rekey \
            below the current epoch, restore of an older header without --yes, retire of an \
            epoch still in use or active); 64 usage error (including a malformed key source spec).
            """,
        subcommands: [Init.self, Info.self, Rekey.self, Reencrypt.self, Retire.self, Mount.self, Status.self, Fsck.self, ExportTree.self, Header.self,
                      WAL.self, Reconcile.self])
}

/// Options every command that opens an existing volume takes.
struct VolumeOptions: ParsableArguments {
    @Argument(help: "The backing directory (ciphertext).")
    var backing: String

    @Option(help: ArgumentHelp("Key source, overriding the one remembered in the volume.", valueName: "SPEC"))
    var keySource: String?

    @Flag(name: .shortAndLong, help: "Log what the command does on stderr.")
    var verbose = false

    func openJournal() throws -> HeaderJournal {
        bootstrapLogging(verbose: verbose)
        return try Volume.journal(backing: backing, keySourceOverride: keySource)
    }
}

func bootstrapLogging(verbose: Bool) {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = verbose ? .info : .warning
        return handler
    }
}

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

/// Exit codes (documented in the command's discussion and README). A live control command
/// maps its errno the same way: ESTALE and EBUSY refused, EIO key failure, EINVAL usage.
func exitCode(for error: any Error) -> Int32 {
    if case EpochSourceError.badSpec = error { return 64 }
    guard let control = error as? ControlCommandFailed else { return Volume.exitCode(for: error) }
    switch control.failure.errno {
    case ESTALE, EBUSY: return 3
    case EIO: return 2
    case EINVAL: return 64
    default: return 1
    }
}
