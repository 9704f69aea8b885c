import APIKeysWire

/// What a key's record says about its upkeep: what `apikey report` lists, for any tool that
/// reviews keys (the seed's own advice: rotate regularly, set expiry dates, watch for unused keys).
public enum KeyHygiene {
    /// One thing worth an operator's look.
    public enum Finding: String, Sendable, Hashable, CaseIterable {
        /// No check was ever made with the key.
        case neverUsed = "never-used"
        /// Used, but not for the idle period.
        case idle
        /// Expires within the expiring period.
        case expiringSoon = "expiring-soon"
        /// Older than the server's maximum key lifetime.
        case olderThanPolicy = "older-than-policy"
        /// Never expires, or later than the server's maximum key lifetime allows from now (a key
        /// made before the policy was set).
        case expiryBeyondPolicy = "expiry-beyond-policy"
    }

    /// What to look for, at `nowMS`.
    public struct Criteria: Sendable, Hashable {
        public var nowMS: Int64
        /// A used key not used for this long is idle.
        public var idleMS: Int64
        /// A key expiring within this is listed.
        public var expiringMS: Int64
        /// The server's maximum key lifetime (``APIKeysClient/getPolicy(timeout:)``); nil: none.
        public var maxLifetimeMS: Int64?

        public init(nowMS: Int64, idleMS: Int64, expiringMS: Int64, maxLifetimeMS: Int64?) {
            self.nowMS = nowMS
            self.idleMS = idleMS
            self.expiringMS = expiringMS
            self.maxLifetimeMS = maxLifetimeMS
        }
    }

    /// The findings for `key`, in ``Finding`` order; empty for a key in good order.
    public static func findings(for key: ApiKey, _ criteria: Criteria) -> [Finding] {
        let now = criteria.nowMS
        var found: [Finding] = []
        if key.lastUsedAtMS == 0 { found.append(.neverUsed) }
        if key.lastUsedAtMS != 0, now - key.lastUsedAtMS >= criteria.idleMS { found.append(.idle) }
        if key.expiresAtMS > now, key.expiresAtMS - now <= criteria.expiringMS { found.append(.expiringSoon) }
        if let max = criteria.maxLifetimeMS {
            if now - key.createdAtMS > max { found.append(.olderThanPolicy) }
            if key.expiresAtMS == 0 || key.expiresAtMS > now + max { found.append(.expiryBeyondPolicy) }
        }
        return found
    }
}
