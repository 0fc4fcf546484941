/// A token bucket: up to `capacity` events at once, then `perSecond` on average. A pure value
/// (the caller passes the time), so that a test can drive it; what it refused is counted, to
/// be reported with the next event it lets through.
public struct TokenBucket: Sendable {
    public let capacity: Double
    public let perSecond: Double
    private var tokens: Double
    private var last: Double?
    /// Events refused since the last one let through.
    public private(set) var refused = 0

    public init(capacity: Int, perSecond: Double) {
        self.capacity = Double(capacity)
        self.perSecond = perSecond
        tokens = Double(capacity)
    }

    /// Whether an event at `now` (seconds, monotonic) goes through; if so, how many were
    /// refused before it.
    public mutating func admit(at now: Double) -> (admitted: Bool, refusedBefore: Int) {
        if let last { tokens = min(capacity, tokens + max(0, now - last) * perSecond) }
        last = now
        guard tokens >= 1 else {
            refused += 1
            return (false, 0)
        }
        tokens -= 1
        defer { refused = 0 }
        return (true, refused)
    }
}
