import Foundation
import Support
import Testing

/// A failed `init` leaves the directory as it found it, so that the next `init` works.
@Suite struct InitFailureTests {
    @Test(arguments: ["missing", "short"])
    func aKeyFailureLeavesNothingBehind(keyFile: String) throws {
        let cli = try CLI()
        defer { cli.remove() }
        let template = "file:keys/\(keyFile)-%d.key"
        if keyFile == "short" {
            try Data(repeating: 7, count: 31).write(to: URL(fileURLWithPath: cli.directory + "/keys/short-1.key"))
        }
        // A new directory, and an empty one made beforehand.
        try FileManager.default.createDirectory(atPath: cli.directory + "/empty", withIntermediateDirectories: false)
        for backing in ["new", "empty"] {
            let failed = try cli("init", backing, "--key-source", template)
            #expect(failed.status == 2, "\(failed.output)")
            let path = cli.directory + "/" + backing
            if backing == "new" {
                #expect(!FileManager.default.fileExists(atPath: path), "the directory init made is removed")
            } else {
                #expect(try FileManager.default.contentsOfDirectory(atPath: path) == [], "the empty directory stays empty")
            }
            let retried = try cli("init", backing, "--key-source", "file:keys/%d.key")
            #expect(retried.status == 0, "\(retried.output)")
            #expect(try cli.info(backing)["epoch"] as? Int == 1)
        }
    }

    @Test func aNonEmptyDirectoryKeepsOnlyWhatItHad() throws {
        let cli = try CLI()
        defer { cli.remove() }
        try FileManager.default.createDirectory(atPath: cli.directory + "/full", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: cli.directory + "/full/x", contents: Data())
        let refused = try cli("init", "full", "--key-source", "file:keys/%d.key")
        #expect(refused.status == 1 && refused.stderr.contains("full"), "\(refused.output)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: cli.directory + "/full") == ["x"])
    }
}
