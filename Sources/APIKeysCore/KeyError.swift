/// A key operation the domain refuses, with what the caller needs to fix it.
///
/// A struct with a ``Code`` rather than an enum, so that new kinds (key policies, say) can be
/// added without breaking code that switches over them.
public struct KeyError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of refusal.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let description: String
        private init(_ name: String) { description = name }

        /// The name breaks the rules.
        public static let invalidName = Code("invalid name")
        /// No permission was given where at least one is required.
        public static let noPermissions = Code("no permissions")
        /// A permission the catalog does not have.
        public static let unknownPermission = Code("unknown permission")
        /// An expiry that is not in the future.
        public static let expiryNotInFuture = Code("expiry not in the future")
        /// An allowlist entry that is not a network, or too many.
        public static let invalidNetwork = Code("invalid network")
        /// No expiry, or one later than the server's maximum key lifetime allows.
        public static let lifetimeBeyondPolicy = Code("lifetime beyond policy")
        /// A rotation grace period that is negative or longer than 7 days.
        public static let invalidGrace = Code("invalid grace period")
        /// A rate limit that cannot be used.
        public static let invalidRateLimit = Code("invalid rate limit")
        /// A number of usage credits that is negative (other than -1 = unlimited, where allowed) or too large.
        public static let invalidUses = Code("invalid usage credits")
        /// No key has this id.
        public static let keyNotFound = Code("key not found")
        /// A page token that this service did not hand out.
        public static let invalidPageToken = Code("invalid page token")
        /// A permission catalog that cannot be used.
        public static let invalidCatalog = Code("invalid catalog")
        /// A check field beyond what one check may store (see ``CheckLimits``).
        public static let checkFieldTooLarge = Code("check field too large")
        /// A check's permission name that is empty or holds a space.
        public static let invalidPermissionName = Code("invalid permission name")
        /// A check field holding a control character (C0, DEL or C1), which no terminal showing
        /// the audit trail should receive.
        public static let controlCharacter = Code("control character")
        /// The call's deadline passed before it could take effect: nothing was changed.
        public static let deadlineExceeded = Code("deadline exceeded")
        /// The admin token of a change was revoked (or never existed) when the change would have
        /// committed: nothing was changed.
        public static let adminTokenNotValid = Code("admin token not valid")
        /// The call is outside what the caller's admin token may do (``AdminGrant``): nothing
        /// was read or changed.
        public static let permissionDenied = Code("permission denied")
        /// No admin token has this name.
        public static let adminTokenNotFound = Code("admin token not found")
        /// An admin token already has this name (a token's name is how it is revoked).
        public static let adminTokenNameTaken = Code("admin token name taken")
    }

    public let code: Code
    /// The request field the error is about, for INVALID_ARGUMENT messages.
    public let field: String?
    /// What is wrong, in words, starting with the field's name when there is one.
    public let description: String

    public init(code: Code, field: String?, description: String) {
        self.code = code
        self.field = field
        self.description = description
    }

    /// The name breaks the rules; `why` says how.
    public static func invalidName(_ why: String) -> KeyError {
        KeyError(code: .invalidName, field: "name", description: "name: \(why)")
    }

    /// No permission was given where at least one is required.
    public static let noPermissions = KeyError(
        code: .noPermissions, field: "permissions", description: "permissions: at least one permission is required")

    /// `name` is not in the catalog.
    public static func unknownPermission(_ name: String) -> KeyError {
        KeyError(
            code: .unknownPermission, field: "permissions",
            description: "permissions: \"\(name)\" is not in the permission catalog")
    }

    /// An expiry at or before now.
    public static func expiryNotInFuture(expiresAtMS: Int64, nowMS: Int64) -> KeyError {
        KeyError(
            code: .expiryNotInFuture, field: "expires_at_ms",
            description: "expires_at_ms: \(expiresAtMS) is not in the future (now is \(nowMS))")
    }

    /// An allowlist that cannot be used; `why` says why.
    public static func invalidNetwork(_ why: String) -> KeyError {
        KeyError(code: .invalidNetwork, field: "allowed_networks", description: "allowed_networks: \(why)")
    }

    /// No expiry, or one beyond the server's policy of keys expiring within `maxLifetimeMS`.
    public static func lifetimeBeyondPolicy(maxLifetimeMS: Int64) -> KeyError {
        KeyError(
            code: .lifetimeBeyondPolicy, field: "expires_at_ms",
            description:
                "expires_at_ms: this server requires keys to expire within "
                + "\(DurationText.text(seconds: maxLifetimeMS / 1000)) (its --max-key-lifetime)")
    }

    /// A rotation grace of `seconds`, outside 0…``KeyRules/maxRotationGraceSeconds``.
    public static func invalidGrace(seconds: Int64) -> KeyError {
        KeyError(
            code: .invalidGrace, field: "grace_seconds",
            description:
                "grace_seconds: \(seconds) is not between 0 and \(KeyRules.maxRotationGraceSeconds) (7 days)")
    }

    /// A rate limit that cannot be used; `why` says why.
    public static func invalidRateLimit(_ why: String) -> KeyError {
        KeyError(code: .invalidRateLimit, field: "rate_limit", description: "rate_limit: \(why)")
    }

    /// `uses` credits cannot be granted.
    public static func invalidUses(_ uses: Int64) -> KeyError {
        KeyError(
            code: .invalidUses, field: "remaining_uses",
            description: "remaining_uses: \(uses) is not between 0 and \(KeyRules.maxUses)")
    }

    /// No key has `id`.
    public static func keyNotFound(id: String) -> KeyError {
        KeyError(code: .keyNotFound, field: "id", description: "no key with id \"\(id)\"")
    }

    /// A page token this service did not hand out.
    public static func invalidPageToken(_ token: String) -> KeyError {
        KeyError(
            code: .invalidPageToken, field: "page_token",
            description: "page_token: \"\(token)\" is not a page token of this list")
    }

    /// A permission catalog that cannot be used; `why` says why.
    public static func invalidCatalog(_ why: String) -> KeyError {
        KeyError(code: .invalidCatalog, field: nil, description: "permission catalog: \(why)")
    }

    /// A check field beyond `limit` (in words, e.g. "at most 64 permissions").
    public static func checkFieldTooLarge(field: String, limit: String) -> KeyError {
        KeyError(code: .checkFieldTooLarge, field: field, description: "\(field): \(limit) allowed")
    }

    /// A check's permission name that is empty or holds a space.
    public static let invalidPermissionName = KeyError(
        code: .invalidPermissionName, field: "permissions",
        description: "permissions: a name may not be empty or hold a space")

    /// A check field holding the control character `scalar`.
    public static func controlCharacter(field: String, scalar: Unicode.Scalar) -> KeyError {
        KeyError(
            code: .controlCharacter, field: field,
            description: "\(field): control character U+\(String(scalar.value, radix: 16, uppercase: true)) not allowed"
        )
    }

    /// The call's deadline passed before it could take effect: nothing was changed.
    public static let deadlineExceeded = KeyError(
        code: .deadlineExceeded, field: nil,
        description: "the deadline passed before the call took effect; nothing was changed")

    /// The admin token of a change is not valid at its commit: nothing was changed.
    /// A call outside the admin token's grant; `what` says what is missing.
    public static func permissionDenied(_ what: String) -> KeyError {
        KeyError(code: .permissionDenied, field: nil, description: "permission denied: \(what)")
    }

    public static let adminTokenNotValid = KeyError(
        code: .adminTokenNotValid, field: nil, description: "the admin token is not valid")
}
