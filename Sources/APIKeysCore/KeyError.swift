/// A key operation the domain refuses, with what the caller needs to fix it.
public enum KeyError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The name breaks the rules; the text says how.
    case invalidName(String)
    /// No permission was given where at least one is required.
    case noPermissions
    /// A permission the catalog does not have.
    case unknownPermission(String)
    /// An expiry that is not in the future.
    case expiryNotInFuture(expiresAtMS: Int64, nowMS: Int64)
    /// No key has this id.
    case keyNotFound(id: String)
    /// A page token that this service did not hand out.
    case invalidPageToken(String)
    /// A permission catalog that cannot be used.
    case invalidCatalog(String)
    /// A check field beyond what one check may store (see ``CheckLimits``).
    case checkFieldTooLarge(field: String, limit: String)
    /// The call's deadline passed before it could take effect: nothing was changed.
    case deadlineExceeded

    /// The request field the error is about, for INVALID_ARGUMENT messages.
    public var field: String? {
        switch self {
        case .invalidName: "name"
        case .noPermissions, .unknownPermission: "permissions"
        case .expiryNotInFuture: "expires_at_ms"
        case .invalidPageToken: "page_token"
        case .keyNotFound: "id"
        case .checkFieldTooLarge(let field, _): field
        case .invalidCatalog, .deadlineExceeded: nil
        }
    }

    public var description: String {
        switch self {
        case .invalidName(let why): "name: \(why)"
        case .noPermissions: "permissions: at least one permission is required"
        case .unknownPermission(let name): "permissions: \"\(name)\" is not in the permission catalog"
        case .expiryNotInFuture(let expires, let now):
            "expires_at_ms: \(expires) is not in the future (now is \(now))"
        case .keyNotFound(let id): "no key with id \"\(id)\""
        case .invalidPageToken(let token): "page_token: \"\(token)\" is not a page token of this list"
        case .invalidCatalog(let why): "permission catalog: \(why)"
        case .checkFieldTooLarge(let field, let limit): "\(field): \(limit) allowed"
        case .deadlineExceeded: "the deadline passed before the call took effect; nothing was changed"
        }
    }
}
