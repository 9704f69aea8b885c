import APIKeysWire
import NIOHTTP1

/// The HTTP counterpart of the RPC port's statuses: a failed call (``APIKeysServer/failure(of:during:)``)
/// answered over HTTP says what really happened, as its RPC reply would (``StatusCode/httpStatus``,
/// the mapping the admin API uses too).
enum HTTPFailure {
    static func status(_ code: StatusCode) -> HTTPResponseStatus { HTTPResponseStatus(statusCode: code.httpStatus) }
}
