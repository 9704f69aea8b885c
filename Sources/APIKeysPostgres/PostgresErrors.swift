import APIKeysCore
import APIKeysStore
import NIOCore
import PostgresNIO

extension StoreError {
    /// `error` from postgres-nio as a store error, for the database at `server`: a failure to
    /// reach it, a commit of unknown outcome, or the server's own message. Errors of the domain
    /// (``KeyError``, ``StoreError``) thrown inside a transaction pass through unchanged.
    static func postgres(_ error: any Error, server: String) -> any Error {
        switch error {
        case is KeyError, is StoreError:
            return error
        case let error as PostgresTransactionError:
            if let closure = error.closureError { return postgres(closure, server: server) }
            if let begin = error.beginError { return postgres(begin, server: server) }
            if let commit = error.commitError {
                if let psql = commit as? PSQLError, psql.code == .server {
                    return StoreError.database(server: server, message: "commit refused: \(serverMessage(psql))")
                }
                return StoreError.outcomeUnknown(server: server, message: "\(commit)")
            }
            return StoreError.database(server: server, message: "transaction failed")
        case let error as PSQLError:
            if error.code == .server {
                return StoreError.database(server: server, message: serverMessage(error))
            }
            return StoreError.unreachable(server: server, message: "\(error.code)")
        case is CancellationError:
            return StoreError.unreachable(server: server, message: "no answer in time")
        default:
            return StoreError.unreachable(server: server, message: "\(error)")
        }
    }

    private static func serverMessage(_ error: PSQLError) -> String {
        let message = error.serverInfo?[.message] ?? "error"
        let state = error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
        return message + state
    }
}

extension SecretHash {
    /// The digest as a `bytea` value.
    var bytea: ByteBuffer { ByteBuffer(bytes: digest) }

    /// The hash stored as `bytea`, or nil when it is not a SHA-256 digest.
    init?(bytea: ByteBuffer) { self.init(digest: Array(bytea.readableBytesView)) }
}
