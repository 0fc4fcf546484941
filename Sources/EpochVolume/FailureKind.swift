import EpochCheck
import EpochHeader
import EpochIO
import EpochSystem
import Glibc

/// How a failure reaches the operator, decided in this one place: the errno a control write
/// fails with (a live command) and the exit code a command ends with (docs/OPERATIONS.md, "Exit codes").
/// A live command's CLI learns only the errno, and takes the exit code of the first kind that
/// has it (`init(controlErrno:)`), so the two agree for every kind a mount can answer.
public enum FailureKind: CaseIterable, Equatable, Sendable {
    /// A malformed command, key source spec or argument.
    case usage
    /// Wrong key, key source failed or timed out, epoch unrecoverable.
    case keyFailure
    /// Rekey below the current epoch, restore of an older header.
    case lowerEpoch
    /// Retire of an epoch still in use, or the active one.
    case epochInUse
    /// Retire of an epoch not in the keyring.
    case epochNotInKeyring
    /// The volume is mounted, or another command that writes it runs.
    case volumeBusy
    /// A control write by neither the mount owner nor root.
    case notOwner
    /// I/O, a damaged header, anything else.
    case failure

    public var errno: Int32 {
        switch self {
        case .usage: EINVAL
        case .keyFailure: EIO
        case .lowerEpoch: ESTALE
        case .epochInUse: EBUSY
        case .epochNotInKeyring: ENOENT
        case .volumeBusy: EAGAIN
        case .notOwner: EPERM
        case .failure: EIO
        }
    }

    public var exitCode: Int32 {
        switch self {
        case .usage: 64
        case .keyFailure: 2
        case .lowerEpoch, .epochInUse, .epochNotInKeyring: 3
        case .volumeBusy: 4
        case .notOwner, .failure: 1
        }
    }

    public init(_ error: any Error) {
        self = switch error {
        case ControlError.notOwner: .notOwner
        case is ControlError, KeySourceError.badSpec, JournalError.reservedEpoch: .usage
        case is KeySourceError, JournalError.wrongKey, JournalError.epochUnrecoverable: .keyFailure
        case JournalError.epochBelowCurrent, HeaderRestoreError.undoes: .lowerEpoch
        case JournalError.retiringActiveEpoch, is RetireError: .epochInUse
        case JournalError.epochNotInKeyring: .epochNotInKeyring
        case is VolumeBusy: .volumeBusy
        default: .failure
        }
    }

    /// The kind of a failure a mount answered a control write with.
    public init(controlErrno errno: Int32) {
        self = Self.allCases.first { $0.errno == errno } ?? .failure
    }

    /// The errno a control write fails with: the backing file system's own (EROFS, ENOSPC, ...)
    /// when the header could not be written, else its kind's.
    public static func errno(for error: any Error) -> Int32 {
        (error as? SystemError)?.errno ?? FailureKind(error).errno
    }
}
