/// Why the server could not start, or did not stop cleanly.
///
/// A struct with a ``Code`` rather than an enum, so that new kinds (TLS, another store) can be
/// added without breaking callers.
public struct ServerError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let description: String
        private init(_ name: String) { description = name }

        /// The data directory could not be created or used.
        public static let dataDirectory = Code("data directory")
        /// Another server holds the data directory's lock.
        public static let dataDirectoryInUse = Code("data directory in use")
        /// The listening socket could not be bound (address in use, not permitted…).
        public static let cannotListen = Code("cannot listen")
        /// The shutdown could not write every audit event before its timeout (a failing disk).
        public static let auditEventsLost = Code("audit events lost")
        /// The TLS certificate, key or client CA could not be used.
        public static let tls = Code("TLS")
    }

    public let code: Code
    /// One line for the operator.
    public let description: String

    public init(code: Code, description: String) {
        self.code = code
        self.description = description
    }

    /// The data directory at `path` cannot be used, for `reason`.
    public static func dataDirectory(path: String, reason: String) -> ServerError {
        ServerError(code: .dataDirectory, description: "cannot use data directory \(path): \(reason)")
    }

    /// Another server (pid `holderPID`, when it could be read) holds the data directory's lock.
    public static func dataDirectoryInUse(path: String, holderPID: Int32?) -> ServerError {
        ServerError(
            code: .dataDirectoryInUse,
            description:
                "data directory \(path) is in use by another apikeyd (\(holderPID.map { "pid \($0)" } ?? "pid unknown")); one server per data directory"
        )
    }

    /// The socket on `host:port` could not be bound, for `reason`.
    public static func cannotListen(host: String, port: Int, reason: String) -> ServerError {
        ServerError(code: .cannotListen, description: "cannot listen on \(host):\(port): \(reason)")
    }

    /// The shutdown could not write `count` audit events before its timeout.
    public static func auditEventsLost(_ count: Int) -> ServerError {
        ServerError(
            code: .auditEventsLost,
            description: "shut down with \(count) audit events not written (the disk refused them)")
    }

    /// The TLS files cannot be used; `reason` names the file and why.
    public static func tls(_ reason: String) -> ServerError {
        ServerError(code: .tls, description: "TLS: \(reason)")
    }
}
