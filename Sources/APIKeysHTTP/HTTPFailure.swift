import APIKeysWire
import HTTPTypes

/// The HTTP counterpart of the RPC port's statuses: a failed call (``APIKeysServer/failure(of:during:)``)
/// answered over HTTP says what really happened, as its RPC reply would.
enum HTTPFailure {
    static func status(_ code: StatusCode) -> HTTPResponse.Status {
        switch code {
        case .invalidArgument, .failedPrecondition: .badRequest
        case .unauthenticated: .unauthorized
        case .permissionDenied: .forbidden
        case .notFound: .notFound
        case .deadlineExceeded: .gatewayTimeout
        case .resourceExhausted, .unavailable: .serviceUnavailable
        case .unimplemented: .notImplemented
        default: .internalServerError
        }
    }
}
