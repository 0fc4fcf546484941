import Foundation

/// A volume the reconciler keeps at the committed epoch: from a `/etc/epochfs/NAME.conf` file
/// (the one the `epochfs@NAME` systemd template reads) or named on the command line.
public struct ReconciledVolume: Equatable, Sendable {
    /// The conf file's NAME, or the backing directory as given.
    public let name: String
    public let backing: String
    /// KEYSOURCE=, or --key-source; nil uses the one the volume remembers.
    public let keySource: String?

    public init(name: String, backing: String, keySource: String? = nil) {
        self.name = name
        self.backing = backing
        self.keySource = keySource
    }

    /// Every `*.conf` file in `directory`, by name. Files without BACKING= are not volumes
    /// and are skipped; an unreadable directory is an error.
    public static func configured(in directory: String) throws -> [ReconciledVolume] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".conf") }.sorted()
        return try names.compactMap { file in
            let path = directory + "/" + file
            guard let text = FileManager.default.contents(atPath: path) else {
                throw ConfigError("\(path): not readable")
            }
            let settings = parseEnvironmentFile(String(decoding: text, as: UTF8.self))
            guard let backing = settings["BACKING"], !backing.isEmpty else { return nil }
            let keySource = settings["KEYSOURCE"].flatMap { $0.isEmpty ? nil : $0 }
            return ReconciledVolume(name: String(file.dropLast(".conf".count)), backing: backing, keySource: keySource)
        }
    }

    /// The subset of systemd's EnvironmentFile= syntax the conf files use: `KEY=VALUE` lines,
    /// `#` and `;` comments, blank lines, and values optionally in single or double quotes.
    static func parseEnvironmentFile(_ text: String) -> [String: String] {
        var settings: [String: String] = [:]
        for rawLine in text.split(whereSeparator: \.isNewline) {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            guard !line.isEmpty, !line.hasPrefix("#"), !line.hasPrefix(";"),
                  let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let quote = value.first, quote == "\"" || quote == "'", value.last == quote {
                value = String(value.dropFirst().dropLast())
            }
            settings[key] = value
        }
        return settings
    }
}

public struct ConfigError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
