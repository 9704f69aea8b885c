/// Why a check was denied, declared in order of precedence: where several apply, the first wins.
/// (The raw values are the contract's DenyReason numbers, which follow the order they were added.)
public enum Denial: Int, Sendable, Hashable, CaseIterable, Comparable {
    /// Forward-auth refused the request before any decision: it could not be judged safely (a
    /// path that cannot be normalized, a malformed permission header). Only ever recorded;
    /// first in precedence, as it comes before any look at the key.
    case invalidRequest = 9
    case malformedKey = 1
    case unknownKey
    case disabled
    case expired
    case missingPermission
    /// The key has an allowlist of networks and the check's client address is not in it.
    case ipNotAllowed
    /// The key's usage credits are spent (until a KeyAdmin refill).
    case usageExceeded = 8
    /// The key's rate limit is spent on this server for now (``CheckOutcome/retryAfterMS``).
    case rateLimited = 7

    /// 401 for the key itself (malformed, unknown, disabled, expired); 403 for what it may not do;
    /// 429 for too many checks; 400 for a request that could not be judged.
    public var httpStatus: UInt32 {
        switch self {
        case .malformedKey, .unknownKey, .disabled, .expired: 401
        case .missingPermission, .ipNotAllowed, .usageExceeded: 403
        case .rateLimited: 429
        case .invalidRequest: 400
        }
    }

    /// The position in the order of precedence.
    private var precedence: Int { Self.allCases.firstIndex(of: self)! }

    public static func < (lhs: Denial, rhs: Denial) -> Bool { lhs.precedence < rhs.precedence }
}

/// The answer to "is this key valid, and may it do these things?".
public struct CheckOutcome: Sendable, Hashable {
    /// nil when the check is allowed.
    public var denial: Denial?
    /// The key, when the secret named a live key.
    public var key: KeyCheckState?
    /// With ``Denial/missingPermission``: what was asked for and not granted, in the order asked.
    public var missingPermissions: [String]
    /// With ``Denial/rateLimited``: milliseconds until the key's next check can be allowed.
    public var retryAfterMS: Int64

    public init(denial: Denial?, key: KeyCheckState?, missingPermissions: [String] = [], retryAfterMS: Int64 = 0) {
        self.denial = denial
        self.key = key
        self.missingPermissions = missingPermissions
        self.retryAfterMS = retryAfterMS
    }

    public var isAllowed: Bool { denial == nil }

    /// Whether the reply to this outcome is the same as the reply to `other`, decided in a few
    /// compares for the hot path: the same decision, reason and retry, the same key state (the
    /// same instance from the index, not merely equal fields: `==` on a name is canonical
    /// equivalence, and a reply carries its bytes), and no missing permissions in either. False
    /// does not mean that the replies differ.
    public func answersAlike(_ other: CheckOutcome) -> Bool {
        guard denial == other.denial, retryAfterMS == other.retryAfterMS, missingPermissions.isEmpty,
            other.missingPermissions.isEmpty
        else { return false }
        switch (key, other.key) {
        case (nil, nil): return true
        case (let key?, let otherKey?): return key.isSameInstance(as: otherKey)
        default: return false
        }
    }

    /// 200, 401 or 403.
    public var httpStatus: UInt32 { denial?.httpStatus ?? 200 }
}
