import APIKeysStore
import Foundation
import NIOSSL
import PostgresNIO

/// Where the database is, from `postgres://user[:password]@host[:port]/database[?sslmode=require]`.
public struct PostgresLocation: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    /// TLS to the database (`sslmode=require`); off by default, for a database on loopback.
    public var requireTLS: Bool
    /// Sessions run with `synchronous_commit = on`, and a key change is refused (nothing is
    /// written) while the database's `synchronous_standby_names` is empty: an acknowledged change
    /// is on a synchronous standby (``BatchRows``).
    public var requireSynchronousStandby = false

    /// Parses `url`; throws ``StoreError/cannotOpen(path:message:)`` (without the password) when it
    /// is not such a URL.
    public init(url: String) throws {
        guard let parts = URLComponents(string: url), ["postgres", "postgresql"].contains(parts.scheme ?? ""),
            let host = parts.host, !host.isEmpty, let user = parts.user, !user.isEmpty
        else {
            throw StoreError.cannotOpen(
                path: "the database URL", message: "expected postgres://user[:password]@host[:port]/database")
        }
        self.host = host
        self.port = parts.port ?? 5432
        self.user = user
        self.password = parts.password
        let database = String(parts.path.drop { $0 == "/" })
        self.database = database.isEmpty ? user : database
        let mode = parts.queryItems?.first { $0.name == "sslmode" }?.value ?? "disable"
        self.requireTLS = mode == "require"
        guard ["disable", "require"].contains(mode) else {
            throw StoreError.cannotOpen(path: description, message: "sslmode must be disable or require")
        }
    }

    /// The URL without its password, for logs and errors.
    public var description: String { "postgres://\(user)@\(host):\(port)/\(database)" }

    var clientConfiguration: PostgresClient.Configuration {
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: user, password: password, database: database,
            tls: requireTLS ? .require(.makeClientConfiguration()) : .disable)
        configuration.options.connectTimeout = .seconds(3)
        configuration.options.maximumConnections = 8
        if requireSynchronousStandby {
            configuration.options.additionalStartupParameters = [("synchronous_commit", "on")]
        }
        return configuration
    }

    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        PostgresConnection.Configuration(
            host: host, port: port, username: user, password: password, database: database,
            tls: requireTLS ? .require(try NIOSSLContext(configuration: .makeClientConfiguration())) : .disable)
    }
}
