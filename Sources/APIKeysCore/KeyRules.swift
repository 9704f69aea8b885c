/// The rules a key's settings must follow, each failing with a precise ``KeyError``.
public enum KeyRules {
    /// Longest name, in characters, after trimming.
    public static let maxNameLength = 100

    /// `name` trimmed of surrounding white space. It must then be 1–100 characters with no
    /// control character (NUL included).
    public static func validName(_ name: String) throws(KeyError) -> String {
        let trimmed = name.trimmingWhitespace()
        guard !trimmed.isEmpty else { throw .invalidName("must not be empty") }
        guard trimmed.count <= maxNameLength else {
            throw .invalidName("must be at most \(maxNameLength) characters, not \(trimmed.count)")
        }
        if let control = trimmed.unicodeScalars.first(where: CheckLimits.isControl) {
            throw .invalidName(
                "must not contain control character U+\(String(control.value, radix: 16, uppercase: true))")
        }
        return trimmed
    }

    /// Most networks in one key's allowlist.
    public static let maxNetworks = 64

    /// `networks` normalised (`10.1.2.3/8` → `10.0.0.0/8`), each once, in the order given; empty
    /// = any address. Each must be a CIDR network or an address.
    public static func validNetworks(_ networks: [String]) throws(KeyError) -> [String] {
        guard networks.count <= maxNetworks else { throw .invalidNetwork("at most \(maxNetworks) networks") }
        var valid: [String] = []
        for text in networks {
            guard let network = IPNetwork(text.trimmingWhitespace()) else {
                throw .invalidNetwork("\"\(text.prefix(64))\" is not a network in CIDR notation or an IP address")
            }
            if !valid.contains(network.description) { valid.append(network.description) }
        }
        return valid
    }

    /// Longest grace period of a rotation: 7 days.
    public static let maxRotationGraceSeconds: Int64 = 7 * 86400

    /// How long, in milliseconds, a rotation keeps the replaced secret valid: 0 (dead at once) up
    /// to ``maxRotationGraceSeconds``.
    public static func validGrace(seconds: Int64) throws(KeyError) -> Int64 {
        guard (0...maxRotationGraceSeconds).contains(seconds) else { throw .invalidGrace(seconds: seconds) }
        return seconds * 1000
    }

    /// Largest burst of a rate limit.
    public static let maxRateBurst: UInt32 = 1_000_000

    /// A rate limit as stored: nil for none (`requests` 0); a period of 0 is 1 s, a burst of 0 is
    /// `requests`. The period must be at most a day and the burst at most ``maxRateBurst``.
    public static func validRateLimit(_ limit: KeyRateLimit?) throws(KeyError) -> KeyRateLimit? {
        guard let limit, limit.requests > 0 else { return nil }
        let period = limit.periodSeconds == 0 ? 1 : limit.periodSeconds
        guard period <= 86400 else { throw .invalidRateLimit("the period must be at most 86400 seconds (a day)") }
        guard limit.burst <= maxRateBurst else { throw .invalidRateLimit("the burst must be at most \(maxRateBurst)") }
        return KeyRateLimit(requests: limit.requests, periodSeconds: period, burst: limit.burst)
    }

    /// Most usage credits one grant may set.
    public static let maxUses: Int64 = 1 << 53

    /// A number of usage credits to grant: 0 … ``maxUses``.
    public static func validUses(_ uses: Int64) throws(KeyError) -> Int64 {
        guard (0...maxUses).contains(uses) else { throw .invalidUses(uses) }
        return uses
    }

    /// An expiry as stored: nil for 0 (never), else it must be later than `nowMS`; with a
    /// `maxLifetimeMS` (the server's policy) it must also be set and no later than `nowMS` + that.
    public static func validExpiry(_ expiresAtMS: Int64, nowMS: Int64, maxLifetimeMS: Int64? = nil) throws(KeyError)
        -> Int64?
    {
        if let maxLifetimeMS, expiresAtMS == 0 || expiresAtMS > nowMS + maxLifetimeMS {
            throw .lifetimeBeyondPolicy(maxLifetimeMS: maxLifetimeMS)
        }
        if expiresAtMS == 0 { return nil }
        guard expiresAtMS > nowMS else { throw .expiryNotInFuture(expiresAtMS: expiresAtMS, nowMS: nowMS) }
        return expiresAtMS
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })!
        return String(scalars[first...last])
    }
}
