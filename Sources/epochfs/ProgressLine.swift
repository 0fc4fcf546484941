import Foundation

/// A progress line on stderr: redrawn in place on a terminal (at most five times a second);
/// otherwise a plain line every two seconds, or nothing unless `plainLines`.
final class ProgressLine {
    private let terminal = isatty(STDERR_FILENO) != 0
    private let plainLines: Bool
    private var lastLine = Date.distantPast
    private var shown = false

    init(plainLines: Bool) { self.plainLines = plainLines }

    func update(_ text: @autoclosure () -> String) {
        guard terminal || plainLines, Date().timeIntervalSince(lastLine) >= (terminal ? 0.2 : 2) else { return }
        lastLine = Date()
        shown = terminal
        FileHandle.standardError.write(Data((terminal ? "\r\u{1b}[K" + text() : text() + "\n").utf8))
    }

    /// Clears the line on a terminal, before other output or at the end.
    func clear() {
        guard shown else { return }
        shown = false
        FileHandle.standardError.write(Data("\r\u{1b}[K".utf8))
    }
}
