import EpochFormat

/// A command of a mount's control file (docs/MOUNTING.md, "The control file"), one per write: the CLI and the
/// reconciler render it, the mount parses it; `parse(command.description) == command`.
public enum ControlCommand: Equatable, Sendable, CustomStringConvertible {
    case rekey(Epoch)
    case raftCutover(UInt64)
    /// `walChecked`: the sender (epochfs retire --mount --wal) found no WAL entry naming it.
    case retire(Epoch, walChecked: Bool)
    /// RATE in MB/s; nil for the mount's default.
    case reencryptStart(rate: Double?)
    case reencryptStop

    public static func parse(_ text: String) throws -> ControlCommand {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
        func epoch(_ word: Substring) throws -> Epoch {
            guard let epoch = Epoch(parsing: word), epoch != 0 else { throw ControlError.badArgument(String(word)) }
            return epoch
        }
        switch (words.first, words.count) {
        case ("rekey", 2):
            return .rekey(try epoch(words[1]))
        case ("retire", 2), ("retire", 3):
            guard words.count == 2 || words[2] == "wal-checked" else { throw ControlError.badArgument(String(words[2])) }
            return .retire(try epoch(words[1]), walChecked: words.count == 3)
        case ("reencrypt", 2), ("reencrypt", 3):
            switch (words[1], words.count) {
            case ("start", 2): return .reencryptStart(rate: nil)
            case ("start", 3):
                guard let rate = Double(words[2]), rate > 0, rate.isFinite else { throw ControlError.badArgument(String(words[2])) }
                return .reencryptStart(rate: rate)
            case ("stop", 2): return .reencryptStop
            default: throw ControlError.badArgument(String(words[1...].joined(separator: " ")))
            }
        case ("raft-cutover", 2):
            guard let index = UInt64(words[1]) else { throw ControlError.badArgument(String(words[1])) }
            return .raftCutover(index)
        default:
            throw ControlError.unknownCommand(words.joined(separator: " "))
        }
    }

    /// The text written to the control file.
    public var description: String {
        switch self {
        case let .rekey(epoch): "rekey \(epoch)"
        case let .raftCutover(index): "raft-cutover \(index)"
        case let .retire(epoch, walChecked): "retire \(epoch)" + (walChecked ? " wal-checked" : "")
        case let .reencryptStart(rate): "reencrypt start" + (rate.map { " \($0)" } ?? "")
        case .reencryptStop: "reencrypt stop"
        }
    }
}

public enum ControlError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownCommand(String)
    case badArgument(String)
    case notOwner(UInt32)

    public var description: String {
        switch self {
        case let .unknownCommand(text): "unknown command '\(text)' (expected 'rekey EPOCH', 'retire EPOCH [wal-checked]', 'reencrypt start [RATE]', 'reencrypt stop' or 'raft-cutover INDEX')"
        case let .badArgument(word): "bad argument '\(word)'"
        case let .notOwner(uid): "caller uid \(uid) is neither the mount owner nor root"
        }
    }
}
