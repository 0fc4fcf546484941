import EpochSystem
import Testing

/// The limiter of the mount's integrity log lines, driven with made-up times.
@Suite struct TokenBucketTests {
    @Test func aBurstThenTheRateAndTheRefusedAreCounted() {
        var bucket = TokenBucket(capacity: 3, perSecond: 2)
        #expect((0..<3).map { _ in bucket.admit(at: 10).admitted } == [true, true, true], "the burst")
        #expect(!bucket.admit(at: 10).admitted && !bucket.admit(at: 10.2).admitted)
        #expect(bucket.refused == 2)
        // Half a second more gives the one token (2/s) the 0.2 s before had started.
        let next = bucket.admit(at: 10.5)
        #expect(next.admitted && next.refusedBefore == 2 && bucket.refused == 0)
        #expect(!bucket.admit(at: 10.5).admitted)
        // A long quiet fills it to its capacity, not beyond.
        #expect((0..<4).map { _ in bucket.admit(at: 100).admitted } == [true, true, true, false])
    }

    @Test func timeGoingBackwardsGivesNothing() {
        var bucket = TokenBucket(capacity: 1, perSecond: 1)
        #expect(bucket.admit(at: 5).admitted)
        #expect(!bucket.admit(at: 1).admitted)
    }
}
