public import APIKeysWire

/// A call that failed, with the status the server (or the client, for local failures) gave it.
///
/// A struct, so that fields can be added without breaking callers. Equality and hashing look at
/// ``code`` and ``message``; ``cause`` is for logs.
public struct APIKeysClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The gRPC canonical status, e.g. ``StatusCode/unauthenticated`` or ``StatusCode/notFound``.
    public var code: StatusCode
    /// Why, in words.
    public var message: String
    /// The error underneath a local failure (a refused connection, an undecodable reply), if any.
    public var cause: (any Error)?

    public init(code: StatusCode, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { "\(code): \(message)" }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code && lhs.message == rhs.message }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(message)
    }
}

extension APIKeysClientError {
    /// The call is outside what the admin token may do (its scope, ceiling or key lifetime):
    /// nothing was read or changed. Another token, not a retry, is the remedy.
    public var isPermissionDenied: Bool { code == .permissionDenied }
}
