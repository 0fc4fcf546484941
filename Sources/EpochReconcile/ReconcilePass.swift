import EpochFormat
import EpochHeader
import EpochSystem
import EpochVolume
import Foundation
import Logging

/// One pass over a host's volumes towards `target` (docs/OPERATIONS.md, "Reconciler"). Every
/// volume's epoch is read from its header, opened with its key source, never from what an
/// earlier pass saw; so a pass after a crash at any point does exactly what is still missing.
/// Like Omicron's `datasets_rekey` (reference: zfs-change-key.md §3.5-3.6): at the target it
/// is skipped, below it rekeyed (live through the mount's control file when mounted, offline
/// with the code `epochfs rekey` uses otherwise), above it left alone and reported as an
/// error. Failures are reported with their reason, and the volumes after them still proceed.
public struct ReconcilePass: Sendable {
    public let volumes: [ReconciledVolume]
    let logger: Logger

    public init(volumes: [ReconciledVolume], logger: Logger) {
        self.volumes = volumes
        self.logger = logger
    }

    public func run(target: Epoch) -> [VolumeReport] {
        CrashPoint.reach("pass-start")
        let reports = volumes.map { reconcile($0, target: target) }
        CrashPoint.reach("pass-end")
        return reports
    }

    func reconcile(_ volume: ReconciledVolume, target: Epoch) -> VolumeReport {
        CrashPoint.reach("before-read")
        var mountpoint: String?
        var header: VolumeHeader?
        do {
            mountpoint = try MountControl.mountPoint(ofBacking: volume.backing)
            let journal = try Volume.journal(backing: volume.backing, keySourceOverride: volume.keySource)
            let current = try journal.open()
            header = current
            if current.epoch == target {
                return report(volume, current, mountpoint, .atTarget)
            }
            if current.epoch > target {
                let message = "epoch \(current.epoch) is above the committed epoch \(target); left as it is"
                logger.error("\(volume.name): \(message)")
                return report(volume, current, mountpoint, .aboveTarget, error: message)
            }
            CrashPoint.reach("before-rekey")
            if let mountpoint {
                try MountControl.send(.rekey(target), mountpoint: mountpoint)
            } else {
                // Offline, as `epochfs rekey` does: owning the volume, so that a mount (in any
                // namespace) that mountinfo did not show is never rekeyed underneath.
                let owner = try VolumeOwner(claiming: volume.backing, for: .command(pid: getpid(), name: "reconcile"))
                _ = try withExtendedLifetime(owner) { try journal.rekey(to: target) }
            }
            CrashPoint.reach("after-rekey")
            let after = try journal.open()
            logger.notice("\(volume.name): rekeyed from epoch \(current.epoch) to \(after.epoch) (sequence \(after.sequence), \(mountpoint.map { "live on \($0)" } ?? "offline"))")
            return report(volume, after, mountpoint, .rekeyed)
        } catch {
            logger.error("\(volume.name) (\(volume.backing)): \(error)")
            return report(volume, header, mountpoint, .failed, error: "\(error)")
        }
    }

    private func report(_ volume: ReconciledVolume, _ header: VolumeHeader?, _ mountpoint: String?, _ state: VolumeReport.State,
                        error: String? = nil) -> VolumeReport {
        VolumeReport(name: volume.name, backing: volume.backing, volumeID: header.map { "\($0.volumeID)" },
                     epoch: header?.epoch, sequence: header?.sequence, mountpoint: mountpoint, state: state,
                     lastError: error, time: Date().timeIntervalSince1970)
    }
}
