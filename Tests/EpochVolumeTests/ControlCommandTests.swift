import EpochCheck
import EpochFormat
import EpochHeader
import EpochIO
import EpochVolume
import Glibc
import Testing

/// The control protocol both sides share (docs/MOUNTING.md, "The control file") and the one mapping of failures to
/// errno and exit code.
@Suite struct ControlCommandTests {
    static let commands: [(ControlCommand, String)] = [
        (.rekey(7), "rekey 7"), (.raftCutover(1200), "raft-cutover 1200"), (.raftCutover(0), "raft-cutover 0"),
        (.retire(2, walChecked: false), "retire 2"), (.retire(2, walChecked: true), "retire 2 wal-checked"),
        (.reencryptStart(rate: nil), "reencrypt start"), (.reencryptStart(rate: 2.5), "reencrypt start 2.5"),
        (.reencryptStart(rate: 20), "reencrypt start 20.0"), (.reencryptStop, "reencrypt stop"),
    ]

    @Test func everyCommandRendersAsItsTextAndParsesBack() throws {
        for (command, text) in Self.commands {
            #expect(command.description == text)
            #expect(try ControlCommand.parse(text) == command)
            #expect(try ControlCommand.parse(" \(text)\n") == command, "surrounding white space, as echo writes it")
        }
        #expect(try ControlCommand.parse("reencrypt start 1e-3") == .reencryptStart(rate: 0.001))
        #expect(try ControlCommand.parse(ControlCommand.reencryptStart(rate: 0.1 + 0.2).description) == .reencryptStart(rate: 0.1 + 0.2))
        #expect(try ControlCommand.parse("rekey\t4294967295") == .rekey(Epoch(rawValue: .max)))
    }

    @Test func malformedCommandsAreRefusedNamingTheWord() {
        let refused: [(String, ControlError)] = [
            ("", .unknownCommand("")), ("rekey", .unknownCommand("rekey")), ("rekey 1 2", .unknownCommand("rekey 1 2")),
            ("rekey 0", .badArgument("0")), ("rekey -1", .badArgument("-1")), ("rekey 4294967296", .badArgument("4294967296")),
            ("retire 2 now", .badArgument("now")), ("retire x", .badArgument("x")),
            ("reencrypt start 0", .badArgument("0")), ("reencrypt start inf", .badArgument("inf")), ("reencrypt start nan", .badArgument("nan")),
            ("reencrypt go", .badArgument("go")), ("raft-cutover -5", .badArgument("-5")), ("REKEY 2", .unknownCommand("REKEY 2")),
        ]
        for (text, error) in refused {
            #expect(throws: error, "\(text)") { _ = try ControlCommand.parse(text) }
        }
    }

    @Test func eachFailureHasOneErrnoAndOneExitCode() {
        let cases: [(any Error, FailureKind, errno: Int32, exit: Int32)] = [
            (ControlError.badArgument("x"), .usage, EINVAL, 64),
            (KeySourceError.badSpec(spec: "x", reason: "y"), .usage, EINVAL, 64),
            (JournalError.reservedEpoch, .usage, EINVAL, 64),
            (ControlError.notOwner(65534), .notOwner, EPERM, 1),
            (JournalError.wrongKey(epoch: 1), .keyFailure, EIO, 2),
            (JournalError.epochUnrecoverable(tried: [1], reason: "r"), .keyFailure, EIO, 2),
            (JournalError.epochBelowCurrent(current: 3, requested: 2), .lowerEpoch, ESTALE, 3),
            (HeaderRestoreError.undoes("older"), .lowerEpoch, ESTALE, 3),
            (JournalError.retiringActiveEpoch(3), .epochInUse, EBUSY, 3),
            (RetireError.walNotChecked(epoch: 1, cutover: 5), .epochInUse, EBUSY, 3),
            (JournalError.epochNotInKeyring(9), .epochNotInKeyring, ENOENT, 3),
            (JournalError.readBackMismatch(slot: 0), .failure, EIO, 1),
        ]
        for (error, kind, errno, exit) in cases {
            #expect(FailureKind(error) == kind, "\(error)")
            #expect(FailureKind.errno(for: error) == errno, "\(error)")
            #expect(kind.exitCode == exit, "\(error)")
        }
        // The backing file system's own errno reaches a control write as itself.
        #expect(FailureKind.errno(for: SystemError("write", path: "h", errno: EROFS)) == EROFS)
        #expect(FailureKind(SystemError("write", path: "h", errno: EROFS)).exitCode == 1)
    }

    /// A live command's CLI sees only the errno: it must end with the exit code the offline
    /// command gives for the same failure.
    @Test func aControlErrnoGivesTheOfflineExitCode() {
        for kind in FailureKind.allCases where kind != .failure {
            #expect(FailureKind(controlErrno: kind.errno).exitCode == kind.exitCode, "\(kind)")
        }
        #expect(FailureKind(controlErrno: EROFS) == .failure)
    }
}
