/// Why the server could not start.
public enum ServerError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The data directory could not be created or used.
    case dataDirectory(path: String, reason: String)
    /// Another server holds the data directory's lock (its pid, when it could be read).
    case dataDirectoryInUse(path: String, holderPID: Int32?)
    /// The listening socket could not be bound (address in use, not permitted…).
    case cannotListen(host: String, port: Int, reason: String)
    /// The shutdown could not write this many audit events before its timeout (a failing disk).
    case auditEventsLost(Int)

    public var description: String {
        switch self {
        case .dataDirectory(let path, let reason): "cannot use data directory \(path): \(reason)"
        case .dataDirectoryInUse(let path, let pid):
            "data directory \(path) is in use by another apikeyd (\(pid.map { "pid \($0)" } ?? "pid unknown")); one server per data directory"
        case .cannotListen(let host, let port, let reason): "cannot listen on \(host):\(port): \(reason)"
        case .auditEventsLost(let count): "shut down with \(count) audit events not written (the disk refused them)"
        }
    }
}
