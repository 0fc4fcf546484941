import EpochFormat
import EpochHeader
import EpochStore
import EpochVolume
import Foundation
import Glibc
import Support
import Testing

/// Whoever can write the backing dir can put any key source spec into the header (and fix the
/// slot's checksum). A `command:` spec found there is shown, never run.
@Suite struct StoredCommandTests {
    @Test func aCommandPlantedInTheHeaderIsNotRun() throws {
        let keys = try KeyFiles(epochs: 1...1)
        let directory = TemporaryDirectory()
        let backing = directory.path + "/backing"
        let marker = directory.path + "/ran"
        _ = try Volume.create(backing: backing, keySource: "file:\(keys.directory.path)/%d.key", epoch: 1, blockSize: 4096)

        let store = try FileHeaderStore(backing: backing)
        var slot = try HeaderSlot.decode(try store.read(slot: 0))
        slot.keySource = "command:touch \(marker); cat \(keys.directory.path)/1.key #\u{1b}[2J"
        try store.write(slot: 0, bytes: try slot.encoded())
        try store.sync()

        #expect(throws: KeySourceError.storedCommand(spec: slot.keySource)) { _ = try LiveVolume(backing: backing) }
        #expect(!FileManager.default.fileExists(atPath: marker))
        let message = KeySourceError.storedCommand(spec: slot.keySource).description
        #expect(message.contains("touch \(marker)") && !message.contains("\u{1b}"), "shown, without control characters")

        // With the operator's own source the keyring's AAD, which binds the spec, exposes the tampering.
        #expect(throws: JournalError.wrongKey(epoch: 1)) {
            _ = try LiveVolume(backing: backing, keySourceOverride: "file:\(keys.directory.path)/%d.key")
        }
        #expect(!FileManager.default.fileExists(atPath: marker))
    }
}
