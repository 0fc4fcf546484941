@testable import EpochSystem
import Testing

@Suite struct MountTableTests {
    /// proc(5)'s example line, a FUSE mount whose mount point and source hold escaped spaces, tabs
    /// and backslashes, one with no optional fields, and lines that are not mounts.
    @Test func parsesFieldsAndUndoesEscapes() {
        let mountinfo = #"""
            36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
            101 22 0:53 / /tmp/my\040mount\011tab\134dir rw,nosuid,nodev shared:300 master:2 - fuse.epochfs epochfs:/srv/back\040ing rw,user_id=0
            102 22 0:54 / /mnt/plain rw - fuse.epochfs epochfs:/b rw
            103 22 0:55 / /mnt/short rw
            not a mount

            """#
        #expect(MountTable.parse(mountinfo) == [
            MountInfo(device: "98:0", mountPoint: "/mnt2", source: "/dev/root"),
            MountInfo(device: "0:53", mountPoint: "/tmp/my mount\ttab\\dir", source: "epochfs:/srv/back ing"),
            MountInfo(device: "0:54", mountPoint: "/mnt/plain", source: "epochfs:/b"),
        ])
    }

    /// A backslash that does not start three octal digits of one byte is kept.
    @Test func keepsBackslashesThatAreNotEscapes() {
        let parsed = MountTable.parse(#"1 0 0:1 / /a\400\09\1 rw - tmpfs none\ rw"#)
        #expect(parsed.map(\.mountPoint) == [#"/a\400\09\1"#])
        #expect(parsed.map(\.source) == [#"none\"#])
    }

    @Test func readsThisProcessesMounts() throws {
        #expect(try MountTable.read().contains { $0.mountPoint == "/" })
    }
}
