/// A failure of the SQLite store, with what an operator needs to act on it.
public enum StoreError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The database file could not be opened (missing directory, permissions, not a database...).
    case cannotOpen(path: String, message: String)
    /// SQLite reports the file as corrupt or not a database.
    case corrupt(path: String, message: String)
    /// Another process holds a lock on the database longer than the busy timeout.
    case locked(path: String, message: String)
    /// The disk (or the database's page limit) is full: the transaction was rolled back.
    case full(path: String, message: String)
    /// Any other SQLite failure: the extended result code, SQLite's message and the statement.
    case sqlite(code: Int32, message: String, sql: String)
    /// The audit queue is full: the writer cannot keep up with the disk, so checks fail closed.
    case auditBacklog(capacity: Int)
    /// The store was closed.
    case closed

    public var description: String {
        switch self {
        case .cannotOpen(let path, let message): "cannot open database \(path): \(message)"
        case .corrupt(let path, let message): "database \(path) is corrupt or not a database: \(message)"
        case .locked(let path, let message): "database \(path) is locked by another process: \(message)"
        case .full(let path, let message): "database \(path) is full: \(message)"
        case .sqlite(let code, let message, let sql): "SQLite error \(code): \(message) (in: \(sql))"
        case .auditBacklog(let capacity): "the audit writer is \(capacity) events behind; refusing new checks"
        case .closed: "the key store is closed"
        }
    }
}
