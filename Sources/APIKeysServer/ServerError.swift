/// Why the server could not start.
public enum ServerError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The data directory could not be created or used.
    case dataDirectory(path: String, reason: String)
    /// The listening socket could not be bound (address in use, not permitted…).
    case cannotListen(host: String, port: Int, reason: String)

    public var description: String {
        switch self {
        case .dataDirectory(let path, let reason): "cannot use data directory \(path): \(reason)"
        case .cannotListen(let host, let port, let reason): "cannot listen on \(host):\(port): \(reason)"
        }
    }
}
