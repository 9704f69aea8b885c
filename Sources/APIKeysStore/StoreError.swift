import APIKeysCore

/// A failure of the store, with what an operator needs to act on it.
///
/// A struct with a ``Code`` rather than an enum, so that new kinds (another store's failures)
/// can be added without breaking callers. ``description`` is for operators and logs: it may name
/// the database file and the SQL; a client never sees it.
public struct StoreError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let description: String
        private init(_ name: String) { description = name }

        /// The database could not be opened (missing directory, permissions, not a database...).
        public static let cannotOpen = Code("cannot open")
        /// The database reports the file as corrupt or not a database.
        public static let corrupt = Code("corrupt")
        /// Another process holds a lock on the database longer than the busy timeout.
        public static let locked = Code("locked")
        /// The disk (or the database's page limit) is full: the transaction was rolled back.
        public static let full = Code("full")
        /// Any other failure of the database.
        public static let database = Code("database")
        /// The audit queue is full: the writer cannot keep up with the disk, so checks fail closed.
        public static let auditBacklog = Code("audit backlog")
        /// More work of one kind is under way than the server takes at once (reads of admin
        /// tokens it has not seen valid, as a flood of made-up tokens asks for): the call is
        /// refused rather than queued, and nothing was changed.
        public static let overloaded = Code("overloaded")
        /// The store was closed.
        public static let closed = Code("closed")
        /// A replica has not reached its database for longer than its staleness bound: checks
        /// fail closed until it has caught up.
        public static let stale = Code("stale")
        /// The database server cannot be reached (refused, timed out, connection lost before the
        /// transaction was committed): nothing was changed.
        public static let unreachable = Code("unreachable")
        /// The connection failed while the transaction was being committed: the change may or
        /// may not have been made.
        public static let outcomeUnknown = Code("outcome unknown")
        /// A backup or a restore was refused, or its copy failed a check: nothing was put in place.
        public static let backup = Code("backup")
    }

    public let code: Code
    /// The database file, when the failure is about one.
    public let path: String?
    /// The database's own message, when there is one.
    public let message: String?
    public let description: String

    public init(code: Code, path: String? = nil, message: String? = nil, description: String) {
        self.code = code
        self.path = path
        self.message = message
        self.description = description
    }

    /// The database file at `path` could not be opened.
    public static func cannotOpen(path: String, message: String) -> StoreError {
        StoreError(
            code: .cannotOpen, path: path, message: message, description: "cannot open database \(path): \(message)")
    }

    /// The database at `path` is corrupt or not a database.
    public static func corrupt(path: String, message: String) -> StoreError {
        StoreError(
            code: .corrupt, path: path, message: message,
            description: "database \(path) is corrupt or not a database: \(message)")
    }

    /// Another process holds a lock on the database at `path`.
    public static func locked(path: String, message: String) -> StoreError {
        StoreError(
            code: .locked, path: path, message: message,
            description: "database \(path) is locked by another process: \(message)")
    }

    /// The database at `path` is full.
    public static func full(path: String, message: String) -> StoreError {
        StoreError(code: .full, path: path, message: message, description: "database \(path) is full: \(message)")
    }

    /// Any other SQLite failure: the extended result code, SQLite's message and the statement.
    public static func sqlite(code: Int32, message: String, sql: String) -> StoreError {
        StoreError(code: .database, message: message, description: "SQLite error \(code): \(message) (in: \(sql))")
    }

    /// The audit queue of `capacity` events is full.
    public static func auditBacklog(capacity: Int) -> StoreError {
        StoreError(
            code: .auditBacklog, description: "the audit writer is \(capacity) events behind; refusing new checks")
    }

    /// The store was closed.
    public static let closed = StoreError(code: .closed, description: "the key store is closed")

    /// A replica `lagMS` behind its database, beyond its bound of `boundMS`.
    public static func stale(lagMS: Int64, boundMS: Int64) -> StoreError {
        StoreError(
            code: .stale,
            description:
                "this replica has not reached its database for \(DurationText.describe(milliseconds: lagMS)) "
                + "(bound \(DurationText.describe(milliseconds: boundMS))); refusing checks until it has caught up")
    }

    /// A replica missed changes that the database's change log no longer holds.
    public static let outrun = StoreError(
        code: .stale,
        description:
            "this replica missed changes that its database no longer keeps (it was out of touch for longer than the "
            + "change log's retention); refusing checks until it is restarted")

    /// A replica found its database's history rewritten (a failover that lost changes it had
    /// applied, a restore) and is loading every key again.
    public static let historyRewritten = StoreError(
        code: .stale,
        description:
            "this replica's database no longer holds changes the replica had applied (a failover that lost them, or "
            + "a restore): loading every key again; refusing checks until it has")

    /// A synchronous standby is required and the database has none configured: nothing was changed.
    public static let noSynchronousStandby = StoreError(
        code: .unreachable,
        description:
            "a synchronous standby is required (--require-synchronous-standby) and the database's "
            + "synchronous_standby_names is empty: nothing was changed")

    /// The database server at `server` cannot be reached, for `message`.
    public static func unreachable(server: String, message: String) -> StoreError {
        StoreError(
            code: .unreachable, path: server, message: message,
            description: "cannot reach the database at \(server): \(message)")
    }

    /// The commit's outcome is unknown: the connection to `server` failed during it.
    public static func outcomeUnknown(server: String, message: String) -> StoreError {
        StoreError(
            code: .outcomeUnknown, path: server, message: message,
            description: "the connection to the database at \(server) failed during a commit: \(message)")
    }

    /// Any other failure reported by a database server: its message (and SQL state).
    public static func database(server: String, message: String) -> StoreError {
        StoreError(code: .database, path: server, message: message, description: "database \(server): \(message)")
    }

    /// The database's schema has migrations this version does not know (`found`, newer than
    /// `known`): a newer apikeyd migrated it, and this one could write what the newer one reads
    /// differently.
    public static func schemaTooNew(found: Int, known: Int) -> StoreError {
        StoreError(
            code: .database,
            description:
                "the database's schema is at migration \(found), newer than this apikeyd knows (\(known)): "
                + "run the newer apikeyd (on every replica)")
    }

    /// A backup or restore that did not happen, for `reason` (nothing was put in place).
    public static func backup(_ reason: String, path: String? = nil) -> StoreError {
        StoreError(code: .backup, path: path, description: reason)
    }
}
