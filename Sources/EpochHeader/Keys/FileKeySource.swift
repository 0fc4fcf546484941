import EpochIO
import EpochCrypto
import EpochFormat
import EpochSystem
import Glibc

/// `file:TEMPLATE`: one key file per epoch, `%d` in the template replaced by the epoch
/// (e.g. `/etc/epochfs/keys/%d.key`). A file holds 32 raw bytes or 64 hex digits.
public struct FileKeySource: KeySource {
    public let template: String

    public init(template: String) throws {
        guard template.split(separator: "%d", omittingEmptySubsequences: false).count == 2 else {
            throw KeySourceError.badSpec(spec: "file:\(template)", reason: "the template must contain %d exactly once")
        }
        self.template = template
    }

    public var spec: String { "file:\(template)" }

    public func path(for epoch: Epoch) -> String { template.replacing("%d", with: epoch.description) }

    public func keyDerivationForNewEpoch() throws -> KeyDerivation { .direct }

    public func wrappingKey(epoch: Epoch, derivation: KeyDerivation) throws -> SecretBytes {
        try requireDirect(derivation)
        let path = path(for: epoch)
        let raw: SecretBytes
        do {
            raw = try readSecretFile(path)
        } catch let error as SystemError {
            throw KeySourceError.unavailable(epoch: epoch, reason: error.description)
        }
        return try decodeWrappingKey(raw, epoch: epoch)
    }

    /// Key files present in the template's directory, newest epoch first.
    public func candidateEpochs() throws -> [Epoch]? {
        let slash = template.lastIndex(of: "/")!
        let directory = String(template[..<slash])
        let pattern = template[template.index(after: slash)...].split(separator: "%d", omittingEmptySubsequences: false)
        guard pattern.count == 2 else { return nil } // %d in a directory component: not listable
        let entries: [DirectoryEntry]
        do {
            entries = try SystemIO().readdir(at: directory.isEmpty ? "/" : directory)
        } catch let error as SystemError {
            throw KeySourceError.unavailable(epoch: 0, reason: error.description)
        }
        var epochs: [Epoch] = []
        for name in entries.map(\.name) {
            guard name.hasPrefix(pattern[0]), name.hasSuffix(pattern[1]),
                  name.count > pattern[0].count + pattern[1].count else { continue }
            let middle = name.dropFirst(pattern[0].count).dropLast(pattern[1].count)
            if middle.allSatisfy(\.isASCII), middle.allSatisfy(\.isNumber), let epoch = Epoch(parsing: middle), epoch != 0 {
                epochs.append(epoch)
            }
        }
        return epochs.sorted(by: >)
    }
}
