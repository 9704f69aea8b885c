/// What an admin token may do: its scope and, for a `keys` token, the fences on the keys it
/// manages. Checked on every KeyAdmin call before anything is read or changed.
public struct AdminGrant: Sendable, Hashable {
    /// How far a token reaches; each scope includes the ones before it.
    public enum Scope: String, Sendable, Hashable, CaseIterable, Comparable {
        /// Reads: keys, permissions, the audit trail and its chain, the policy.
        case read
        /// `read` plus creating, changing, enabling, disabling, rotating and deleting keys.
        case keys
        /// Everything, managing admin tokens included.
        case admin

        public static func < (lhs: Self, rhs: Self) -> Bool {
            allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
        }
    }

    public var scope: Scope
    /// The only permissions keys it creates or changes may hold; nil: any. (A key holding a
    /// permission outside it can be neither changed nor deleted with this token.)
    public var ceiling: Set<String>?
    /// Keys it creates or whose expiry it sets must expire within this; nil: as the server's policy allows.
    public var maxKeyLifetimeMS: Int64?
    /// When the token stops working; nil: never.
    public var expiresAtMS: Int64?

    public init(scope: Scope, ceiling: Set<String>? = nil, maxKeyLifetimeMS: Int64? = nil, expiresAtMS: Int64? = nil) {
        self.scope = scope
        self.ceiling = scope == .admin ? nil : ceiling
        self.maxKeyLifetimeMS = scope == .admin ? nil : maxKeyLifetimeMS
        self.expiresAtMS = expiresAtMS
    }

    /// The bootstrap token's grant: everything, for ever.
    public static let full = AdminGrant(scope: .admin)

    public func isExpired(atMS nowMS: Int64) -> Bool { expiresAtMS.map { $0 <= nowMS } ?? false }

    /// Why a token with this grant may not give `other` to a new token (more scope, a wider
    /// ceiling, a longer key lifetime or a later expiry than it holds); nil: it may.
    public func refusal(toGrant other: AdminGrant) -> String? {
        if other.scope > scope { return "scope \(other.scope.rawValue) is wider than this token's \(scope.rawValue)" }
        if let ceiling {
            guard let wanted = other.ceiling ?? (other.scope == .read ? [] : nil), wanted.isSubset(of: ceiling) else {
                return "a ceiling wider than this token's (\(ceiling.sorted().joined(separator: ",")))"
            }
        }
        if let maxKeyLifetimeMS, other.scope != .read {
            guard let wanted = other.maxKeyLifetimeMS, wanted <= maxKeyLifetimeMS else {
                return "a key lifetime longer than this token's (\(maxKeyLifetimeMS) ms)"
            }
        }
        if let expiresAtMS {
            guard let wanted = other.expiresAtMS, wanted <= expiresAtMS else {
                return "an expiry later than this token's"
            }
        }
        return nil
    }

    /// Why a token with this grant may not give or touch a key holding `permissions`; nil: it may.
    public func refusal(forPermissions permissions: some Sequence<String>) -> String? {
        guard let ceiling else { return nil }
        let outside = Set(permissions).subtracting(ceiling).sorted()
        guard !outside.isEmpty else { return nil }
        return
            "\(outside.joined(separator: ", ")) outside this token's ceiling (\(ceiling.sorted().joined(separator: ",")))"
    }

    /// Why a token with this grant may not give a key the expiry `expiresAtMS` (nil: never) at
    /// `nowMS`; nil: it may.
    public func refusal(forExpiry expiresAtMS: Int64?, nowMS: Int64) -> String? {
        guard let maxKeyLifetimeMS else { return nil }
        guard let expiresAtMS, expiresAtMS <= nowMS + maxKeyLifetimeMS else {
            return "keys this token creates or extends must expire within \(maxKeyLifetimeMS / 1000) s"
        }
        return nil
    }
}

extension AdminGrant {
    /// A grant from command-line text: `scope` by name, `ceiling` comma-separated, the key
    /// lifetime and the expiry as durations (`30d`, `12h`; ``DurationText``) from `nowMS`.
    public init(scopeNamed scope: String, ceiling: String?, maxKeyLifetime: String?, expiresIn: String?, nowMS: Int64)
        throws(KeyError)
    {
        guard let parsed = Scope(rawValue: scope) else {
            throw KeyError(code: .invalidName, field: "scope", description: "scope: one of read, keys, admin")
        }
        func duration(_ text: String?, _ field: String) throws(KeyError) -> Int64? {
            guard let text else { return nil }
            guard let seconds = DurationText.seconds(text), seconds > 0 else {
                throw KeyError(
                    code: .expiryNotInFuture, field: field, description: "\(field): a duration such as 30d, 12h or 45m")
            }
            return seconds * 1000
        }
        let names = ceiling?.split(separator: ",").map { String($0.filter { !$0.isWhitespace }) }
        self.init(
            scope: parsed, ceiling: names.map(Set.init),
            maxKeyLifetimeMS: try duration(maxKeyLifetime, "max-key-lifetime"),
            expiresAtMS: try duration(expiresIn, "expires").map { nowMS + $0 })
    }

    /// What the grant holds beyond its scope's name, as short `name value` parts (for listings).
    public var summary: [String] {
        var parts = ["scope \(scope.rawValue)"]
        if let ceiling { parts.append("ceiling \(ceiling.sorted().joined(separator: ","))") }
        if let maxKeyLifetimeMS { parts.append("max-key-lifetime \(maxKeyLifetimeMS / 1000)s") }
        if let expiresAtMS { parts.append("expires-at-ms \(expiresAtMS)") }
        return parts
    }
}
