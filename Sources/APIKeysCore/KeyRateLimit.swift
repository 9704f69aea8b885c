import Synchronization

/// A key's rate limit: at most `requests` allowed checks per `periodSeconds`, with bursts of up to
/// `burst` at once (a token bucket that holds `burst` tokens and refills `requests` per period).
public struct KeyRateLimit: Sendable, Hashable, CustomStringConvertible {
    public var requests: UInt32
    public var periodSeconds: UInt32
    public var burst: UInt32

    /// `burst` 0 means `requests`: a full period's worth at once.
    public init(requests: UInt32, periodSeconds: UInt32 = 1, burst: UInt32 = 0) {
        self.requests = requests
        self.periodSeconds = periodSeconds
        self.burst = burst == 0 ? requests : burst
    }

    /// `100/s`, `6000/m`, `10000/h` or `500/d`, as operators type it; nil for anything else.
    public init?(text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let requests = UInt32(parts[0]), requests > 0 else { return nil }
        let period: UInt32? =
            switch parts[1] {
            case "s": 1
            case "m": 60
            case "h": 3600
            case "d": 86400
            default: nil
            }
        guard let period else { return nil }
        self.init(requests: requests, periodSeconds: period)
    }

    /// `100/s burst 200`; the period in the largest unit that divides it.
    public var description: String {
        let unit: String =
            switch periodSeconds {
            case 1: "s"
            case 60: "m"
            case 3600: "h"
            case 86400: "d"
            default: "\(periodSeconds)s"
            }
        return "\(requests)/\(unit)" + (burst == requests ? "" : " burst \(burst)")
    }

    /// As stored: `requests/periodSeconds/burst`.
    public var stored: String { "\(requests)/\(periodSeconds)/\(burst)" }

    /// The limit ``stored`` wrote; nil for `""` (none) or anything else.
    public init?(stored: String) {
        let parts = stored.split(separator: "/")
        guard parts.count == 3, let requests = UInt32(parts[0]), let period = UInt32(parts[1]),
            let burst = UInt32(parts[2]), requests > 0, period > 0, burst > 0
        else { return nil }
        self.init(requests: requests, periodSeconds: period, burst: burst)
    }

    /// Microseconds between two tokens.
    var emissionIntervalUS: Int64 { max(1, Int64(periodSeconds) * 1_000_000 / Int64(requests)) }
}

/// One key's token bucket on this server, shared by every event loop without a lock: the
/// generic cell rate algorithm, whose whole state is one atomic time (the theoretical arrival
/// time of the next check), advanced by compare-and-exchange.
///
/// Buckets compare by their limit (the setting), not by what they hold.
public final class RateBucket: Sendable, Hashable {
    public let limit: KeyRateLimit

    public static func == (lhs: RateBucket, rhs: RateBucket) -> Bool { lhs.limit == rhs.limit }
    public func hash(into hasher: inout Hasher) { hasher.combine(limit) }
    /// Microseconds since the epoch; 0 before the first check.
    private let nextArrivalUS = Atomic<Int64>(0)

    public init(limit: KeyRateLimit) { self.limit = limit }

    /// Takes a token at `nowMS`: nil when one was there, else the milliseconds until there is one.
    public func take(nowMS: Int64) -> Int64? {
        let now = nowMS * 1000
        let interval = limit.emissionIntervalUS
        let tolerance = interval * (Int64(limit.burst) - 1)
        var expected = nextArrivalUS.load(ordering: .relaxed)
        while true {
            let arrival = max(expected, now)
            if arrival - now > tolerance {
                // The next token comes when the arrival time is within the tolerance again.
                let waitUS = arrival - tolerance - now
                return (waitUS + 999) / 1000
            }
            let (exchanged, original) = nextArrivalUS.compareExchange(
                expected: expected, desired: arrival + interval, ordering: .relaxed)
            if exchanged { return nil }
            expected = original
        }
    }

    /// Returns a token ``take(nowMS:)`` gave, for a check that was denied after taking it.
    public func giveBack() {
        nextArrivalUS.subtract(limit.emissionIntervalUS, ordering: .relaxed)
    }
}
