public import APIKeysWire

/// A call that failed, with the status the server (or the client, for local failures) gave it.
public struct APIKeysClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The gRPC canonical status, e.g. ``StatusCode/unauthenticated`` or ``StatusCode/notFound``.
    public var code: StatusCode
    /// Why, in words.
    public var message: String

    public init(code: StatusCode, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
