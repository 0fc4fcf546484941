import Foundation
import Support
import Testing

/// The layers of Package.swift as the compiler keeps them: read from `swift package
/// dump-package` (the manifest evaluated, nothing resolved or built) and from the sources'
/// import lines. SwiftPM builds a target that imports a module it does not declare whenever
/// that module happens to be built first, so the declarations are checked here, not assumed.
@Suite struct LayeringTests {
    /// The package's own targets in layers, lowest first (Package.swift, docs/ARCHITECTURE.md):
    /// a target may depend only on targets of earlier layers. Test code (Tests/) may depend on
    /// anything but the FUSE binding.
    static let layers: [[String]] = [
        ["COpenSSL", "CFuse3", "CLinux", "CURing", "CCRC32C", "CEscape"],
        ["EpochIO", "EpochCrypto"],
        ["EpochFormat"],
        ["EpochSystem", "EpochWAL"],
        ["EpochHeader", "EpochMetrics"],
        ["EpochStore"],
        ["EpochCheck"],
        ["EpochVolume"],
        ["EpochFUSE", "EpochReconcile"],
        ["epochfs", "epochfs-bench", "epochfs-walgen"],
    ]
    /// The only targets that may use libfuse: the frontend, the CLI, and the binding's own test.
    static let fuseUsers: Set<String> = ["EpochFUSE", "epochfs", "CFuse3Tests"]

    struct Target {
        let name: String
        let isTestCode: Bool
        /// Where its sources are, relative to the package root.
        let path: String
        /// Targets of this package and products of other packages, by name.
        let dependencies: Set<String>
    }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// The targets as the manifest declares them. A scratch path of its own, so that the
    /// `swift test` running this (which holds .build) does not make it wait.
    static func targets() throws -> [Target] {
        let scratch = TemporaryDirectory()
        let result = try runBounded(["/usr/bin/env", "swift", "package", "--scratch-path", scratch.path, "dump-package"],
                                    currentDirectory: root, seconds: 120)
        guard result.status == 0, let manifest = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
              let targets = manifest["targets"] as? [[String: Any]] else {
            throw TestFailure("swift package dump-package failed: \(result.output)")
        }
        return targets.map { target in
            let name = target["name"] as! String
            let type = target["type"] as! String
            let path = target["path"] as? String ?? (type == "test" ? "Tests/" : "Sources/") + name
            let dependencies = (target["dependencies"] as! [[String: Any]]).compactMap { dependency in
                ["byName", "target", "product"].lazy.compactMap { (dependency[$0] as? [Any])?.first as? String }.first
            }
            return Target(name: name, isTestCode: type == "test" || path.hasPrefix("Tests/"), path: path, dependencies: Set(dependencies))
        }
    }

    /// The modules each Swift file under `path` imports, `@testable` and `@_exported` ones too.
    static func imports(under path: String) -> [(file: String, module: String, exported: Bool)] {
        let directory = root + "/" + path
        guard let files = FileManager.default.enumerator(atPath: directory) else { return [] }
        var found: [(String, String, Bool)] = []
        for case let file as String in files where file.hasSuffix(".swift") {
            guard let text = try? String(contentsOfFile: directory + "/" + file, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") {
                let words = line.split(separator: " ")
                guard let keyword = words.firstIndex(of: "import"), keyword + 1 < words.count,
                      words[..<keyword].allSatisfy({ $0.hasPrefix("@") }) else { continue }
                found.append((path + "/" + file, String(words[keyword + 1]), words[..<keyword].contains("@_exported")))
            }
        }
        return found
    }

    @Test func everyTargetDependsOnlyOnLowerLayers() throws {
        let targets = try Self.targets()
        let layerOf = Dictionary(uniqueKeysWithValues: Self.layers.enumerated().flatMap { index, names in names.map { ($0, index) } })
        let ours = Set(targets.map(\.name))
        for target in targets where !target.isTestCode {
            let layer = try #require(layerOf[target.name], "\(target.name) is in no layer of LayeringTests (nor of Package.swift's comments)")
            for dependency in target.dependencies where ours.contains(dependency) {
                let lower = try #require(layerOf[dependency], "\(target.name) depends on \(dependency), which is test code")
                #expect(lower < layer, "\(target.name) (layer \(layer)) depends on \(dependency) (layer \(lower)): a layer may use only lower ones")
            }
        }
        let fuseUsers = Set(targets.filter { $0.dependencies.contains("CFuse3") }.map(\.name))
        #expect(fuseUsers.isSubset(of: Self.fuseUsers), "only the frontend and the CLI use libfuse: \(fuseUsers.subtracting(Self.fuseUsers).sorted())")
    }

    /// A module imported but not declared would let a layer reach a module the layering does
    /// not show; one re-exported would hide what its users import.
    @Test func everyImportIsDeclaredAndNoneOfOursReexported() throws {
        let targets = try Self.targets()
        let ours = Set(targets.map(\.name))
        let products = Set(targets.flatMap(\.dependencies)).subtracting(ours)
        var checked = 0
        for target in targets {
            for (file, module, exported) in Self.imports(under: target.path) where ours.contains(module) || products.contains(module) {
                checked += 1
                #expect(target.dependencies.contains(module),
                        "\(file) imports \(module), which \(target.name) does not declare in Package.swift")
                #expect(!(exported && ours.contains(module)), "\(file) re-exports \(module): its users must import it themselves")
            }
        }
        #expect(checked > 100, "the sources were found and read (\(checked) imports)")
    }
}
