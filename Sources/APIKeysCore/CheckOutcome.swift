/// Why a check was denied, in order of precedence: where several apply, the first wins.
public enum Denial: Int, Sendable, Hashable, CaseIterable, Comparable {
    case malformedKey = 1
    case unknownKey
    case disabled
    case expired
    case missingPermission
    /// The key has an allowlist of networks and the check's client address is not in it.
    case ipNotAllowed

    /// 401 for the key itself (malformed, unknown, disabled, expired); 403 for what it may not do.
    public var httpStatus: UInt32 { self == .missingPermission || self == .ipNotAllowed ? 403 : 401 }

    public static func < (lhs: Denial, rhs: Denial) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// The answer to "is this key valid, and may it do these things?".
public struct CheckOutcome: Sendable, Hashable {
    /// nil when the check is allowed.
    public var denial: Denial?
    /// The key, when the secret named a live key.
    public var key: KeyCheckState?
    /// With ``Denial/missingPermission``: what was asked for and not granted, in the order asked.
    public var missingPermissions: [String]

    public init(denial: Denial?, key: KeyCheckState?, missingPermissions: [String] = []) {
        self.denial = denial
        self.key = key
        self.missingPermissions = missingPermissions
    }

    public var isAllowed: Bool { denial == nil }

    /// 200, 401 or 403.
    public var httpStatus: UInt32 { denial?.httpStatus ?? 200 }
}
