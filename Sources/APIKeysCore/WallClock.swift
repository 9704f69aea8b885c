#if canImport(Glibc)
    import Glibc
#endif
import Synchronization

/// Tells the time in unix epoch milliseconds. Injected wherever expiry is judged, so tests can
/// move time without sleeping.
public protocol WallClock: Sendable {
    /// Milliseconds since the unix epoch.
    func nowMS() -> Int64
}

/// The real time of day.
public struct SystemWallClock: WallClock {
    public init() {}

    public func nowMS() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}

/// A clock that moves only when told to; for tests.
public final class ManualWallClock: WallClock {
    private let now: Atomic<Int64>

    public init(nowMS: Int64) { self.now = Atomic(nowMS) }

    public func nowMS() -> Int64 { now.load(ordering: .relaxed) }

    /// Moves the clock forward (or back, with a negative value).
    public func advance(byMS delta: Int64) { now.add(delta, ordering: .relaxed) }

    /// Sets the time.
    public func set(nowMS: Int64) { now.store(nowMS, ordering: .relaxed) }
}
