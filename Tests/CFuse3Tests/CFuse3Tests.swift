import CFuse3
import Testing

/// The libfuse3 system library resolves, links, and is a 3.x release new enough for the
/// low-level API the frontend uses.
@Test func linksAgainstLibfuse3() {
    let version = fuse_version()
    #expect(version >= 310, "libfuse \(version) is older than 3.10")
    #expect(version < 400)
}
