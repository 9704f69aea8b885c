import APIKeysCore
import APIKeysStore
import APIKeysWire
import Logging

/// A call that failed: the status and message its reply carries, and what caused it.
///
/// The message is for the client and never holds a path, SQL or a library's text. A failure
/// of the server itself (storage, an unexpected error) gets a `reference`: the client's message
/// names it, and the server logs it with the full cause, so an operator can find one from the other.
public struct RPCError: Error, Sendable {
    public internal(set) var code: StatusCode
    public internal(set) var message: String
    /// The underlying error, for the server's log only.
    var cause: (any Error)?
    /// The id the client's message and the server's log line share; nil for the caller's own mistakes.
    var reference: String?

    /// A refusal of the caller's request, its message for the caller.
    public init(_ code: StatusCode, _ message: String) {
        self.code = code
        self.message = message
    }

    /// A failure of the server, not the caller: a short message plus a reference to the log line.
    private init(serverFailure code: StatusCode, _ message: String, cause: any Error) {
        let reference = Self.newReference()
        self.init(code, "\(message) (ref \(reference))")
        self.cause = cause
        self.reference = reference
    }

    /// The one place where errors of every layer become a wire status.
    init(_ error: any Error) {
        switch error {
        case let error as RPCError:
            self = error
        case let error as WireError:
            self.init(.invalidArgument, "\(error)")
        case let error as KeyError:
            switch error.code {
            case .keyNotFound: self.init(.notFound, "\(error)")
            case .deadlineExceeded: self.init(.deadlineExceeded, "\(error)")
            case .adminTokenNotValid: self.init(.unauthenticated, "\(error)")
            case .permissionDenied: self.init(.permissionDenied, "\(error)")
            case .adminTokenNotFound: self.init(.notFound, "\(error)")
            case .adminTokenNameTaken: self.init(.failedPrecondition, "\(error)")
            case .invalidCatalog: self.init(serverFailure: .internal, "internal error", cause: error)
            default: self.init(.invalidArgument, "\(error)")
            }
        case let error as StoreError:
            switch error.code {
            case .auditBacklog: self.init(.unavailable, "the audit trail is behind; try again shortly")
            case .closed: self.init(.unavailable, "the server is shutting down")
            case .overloaded: self.init(.unavailable, "the server is busy with calls like this one; try again shortly")
            case .stale: self.init(.unavailable, "\(error)")
            case .unreachable:
                self.init(
                    serverFailure: .unavailable, "the key store's database cannot be reached; nothing was changed",
                    cause: error)
            case .outcomeUnknown:
                self.init(
                    serverFailure: .unavailable,
                    "the key store's database failed during the commit: the change may have been made; look before retrying",
                    cause: error)
            case .locked:
                self.init(serverFailure: .unavailable, "the key store is busy; nothing was changed", cause: error)
            case .full:
                self.init(
                    serverFailure: .resourceExhausted, "the key store's disk is full; nothing was changed", cause: error
                )
            default:
                self.init(serverFailure: .internal, "storage error; nothing was changed", cause: error)
            }
        default:
            self.init(serverFailure: .internal, "internal error", cause: error)
        }
    }

    /// Logs a failure of the server with its reference and cause (the caller's own mistakes are
    /// not logged: their message says it all).
    func logIfServerFailure(to logger: Logger, method: String) {
        guard let reference else { return }
        logger.error(
            "call failed",
            metadata: [
                "ref": "\(reference)", "method": "\(method)", "status": "\(code)",
                "error": "\(cause.map { "\($0)" } ?? message)",
            ])
    }

    /// Eight hex digits: enough to find one log line among a day's.
    private static func newReference() -> String {
        let value = UInt32.random(in: .min ... .max)
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 8 - hex.count) + hex
    }
}
