import EpochFormat
import EpochHeader
import EpochStore

/// The anchor as fsck sees it: checked against the machine's copy, and anchored again by a repair.
extension VolumeAnchor {
    /// fsck: what is wrong with the volume's anchor in `directory`; nil when the backing dir is
    /// not older than the machine's copy, or when the machine has none. Writes nothing.
    public static func finding(in volume: LiveVolume, directory: String) -> String? {
        let header = volume.header
        do {
            let key = try AnchorRecord.key(nameKey: header.keyring.nameKey, volumeID: header.volumeID)
            let recorded = try readRecord(backing: volume.backing, volumeID: header.volumeID, key: key, io: volume.io)
            guard let local = try LocalAnchor(directory: directory, volumeID: header.volumeID, io: volume.io) else { return nil }
            defer { local.close() }
            let anchored = try local.read()
            guard (recorded ?? 0) < anchored else { return nil }
            return "\(AnchorError.rolledBack(found: recorded, anchored: anchored, localPath: local.path))"
        } catch {
            return "\(error)"
        }
    }

    /// fsck --repair: anchors the volume again as the backing dir holds it now; what it did.
    public static func reanchor(_ volume: LiveVolume, directory: String) throws -> String {
        let header = volume.header
        let anchor = try VolumeAnchor(backing: volume.backing, volumeID: header.volumeID, nameKey: header.keyring.nameKey,
                                      options: AnchorOptions(directory: directory, acceptRollback: true), io: volume.io)
        return anchor.note ?? "anchor in \(directory) agrees"
    }
}
