/// Capped exponential backoff: `base`, twice that, ... up to `cap` seconds, until reset.
public struct Backoff: Sendable {
    public let base: Double
    public let cap: Double
    private var failures = 0

    public init(base: Double, cap: Double) {
        self.base = base
        self.cap = cap
    }

    /// The delay before the next attempt, counting one more failure.
    public mutating func next() -> Double {
        defer { failures += 1 }
        return min(cap, base * Double(1 << min(failures, 30)))
    }

    public mutating func reset() { failures = 0 }
}
