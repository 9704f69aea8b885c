import APIKeysCore
import APIKeysStore
import APIKeysWire

/// A call that failed: the status and message its reply carries.
struct RPCError: Error, Hashable, Sendable {
    var code: StatusCode
    var message: String

    init(_ code: StatusCode, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The one place where errors of every layer become a wire status.
    init(_ error: any Error) {
        switch error {
        case let error as RPCError:
            self = error
        case let error as WireError:
            self.init(.invalidArgument, "\(error)")
        case let error as KeyError:
            switch error {
            case .keyNotFound: self.init(.notFound, "\(error)")
            case .deadlineExceeded: self.init(.deadlineExceeded, "\(error)")
            case .invalidCatalog: self.init(.internal, "\(error)")
            default: self.init(.invalidArgument, "\(error)")
            }
        case let error as StoreError:
            switch error {
            case .auditBacklog, .locked, .closed: self.init(.unavailable, "\(error)")
            case .cannotOpen, .corrupt, .sqlite: self.init(.internal, "\(error)")
            }
        default:
            self.init(.internal, "internal error")
        }
    }
}
