import APIKeysStore
internal import CSQLite

/// One SQLite connection with a cache of prepared statements.
///
/// Not thread-safe by itself: each owner (the admin store, the audit writer) serialises its use,
/// which is why it is `@unchecked Sendable`. SQLite is opened with `SQLITE_OPEN_NOMUTEX`.
final class SQLiteConnection: @unchecked Sendable {
    let path: String
    private var handle: OpaquePointer?
    private var statements: [String: SQLiteStatement] = [:]

    /// Opens (creating if needed, unless `create` is false) the database at `path` in WAL mode
    /// with foreign keys on and a busy timeout, and checks that it is readable.
    init(path: String, busyTimeoutMS: Int32 = 5000, create: Bool = true) throws(StoreError) {
        _ = Self.configureOnce
        self.path = path
        let flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        handle = db
        guard rc == SQLITE_OK else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_close_v2(db)
            handle = nil
            throw .cannotOpen(path: path, message: message)
        }
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, busyTimeoutMS)
        do {
            // Reading the schema is the first thing that fails on a corrupt or foreign file.
            try execute("PRAGMA journal_mode = WAL")
            try execute("PRAGMA foreign_keys = ON")
            try execute("PRAGMA synchronous = FULL")
            try execute("SELECT count(*) FROM sqlite_schema")
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    /// Process-wide SQLite settings, applied before the first connection opens.
    private static let configureOnce: Void = { _ = csqlite_disable_memstatus() }()

    /// Finalises every statement and closes the connection. Safe to call twice.
    func close() {
        statements.values.forEach { $0.finalize() }
        statements = [:]
        if let handle { sqlite3_close_v2(handle) }
        handle = nil
    }

    /// Runs one or more statements that return no rows.
    func execute(_ sql: String) throws(StoreError) {
        guard let handle else { throw .closed }
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc, sql: sql) }
    }

    /// The prepared statement for `sql`, reset and with its bindings cleared, prepared once.
    func statement(_ sql: String) throws(StoreError) -> SQLiteStatement {
        if let cached = statements[sql] {
            cached.reset()
            return cached
        }
        guard let handle else { throw .closed }
        var raw: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &raw, nil)
        guard rc == SQLITE_OK, let raw else { throw error(rc, sql: sql) }
        let statement = SQLiteStatement(raw, connection: self, sql: sql)
        statements[sql] = statement
        return statement
    }

    /// Runs `body` in a write transaction (BEGIN IMMEDIATE … COMMIT), rolling back if it or
    /// `beforeCommit` (the last word on whether to commit, e.g. a deadline) throws.
    func transaction<R>(beforeCommit: () throws -> Void = {}, _ body: () throws -> R) throws -> R {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try beforeCommit()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    /// `body` in a read transaction: every statement in it sees one snapshot of the database.
    func readTransaction<R>(_ body: () throws -> R) throws -> R {
        try execute("BEGIN")
        defer { try? execute("COMMIT") }
        return try body()
    }

    /// Copies this whole database into `destination` with SQLite's online backup API, in one
    /// step: one read snapshot, which writers in WAL mode do not wait for. A source or
    /// destination busy for longer than 5 s throws ``StoreError/locked(path:message:)``.
    func backup(into destination: SQLiteConnection) throws(StoreError) {
        guard let handle, let target = destination.handle else { throw .closed }
        guard let backup = sqlite3_backup_init(target, "main", handle, "main") else {
            throw destination.error(sqlite3_extended_errcode(target), sql: "online backup")
        }
        var rc: Int32
        var waitedMS: Int32 = 0
        repeat {
            rc = sqlite3_backup_step(backup, -1)
            guard rc == SQLITE_BUSY || rc == SQLITE_LOCKED, waitedMS < 5000 else { break }
            sqlite3_sleep(10)
            waitedMS += 10
        } while true
        let finished = sqlite3_backup_finish(backup)
        guard rc == SQLITE_DONE else { throw error(rc, sql: "online backup") }
        guard finished == SQLITE_OK else { throw destination.error(finished, sql: "online backup") }
    }

    /// Tests only: forbids (or allows again) the database to grow by a page, which SQLite then
    /// reports as SQLITE_FULL, as on a full disk.
    func forbidGrowth(_ forbid: Bool) throws {
        if forbid {
            let pages = try statement("PRAGMA page_count").firstRow { $0.int64(0) } ?? 0
            try execute("PRAGMA max_page_count = \(pages)")
        } else {
            try execute("PRAGMA max_page_count = 4294967294")
        }
    }

    /// Rows changed by the last statement.
    var changes: Int { handle.map { Int(sqlite3_changes($0)) } ?? 0 }

    /// A ``StoreError`` for result code `rc`, classified so that a corrupt or locked file says so.
    func error(_ rc: Int32, sql: String) -> StoreError {
        let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
        switch rc & 0xFF {
        case SQLITE_CORRUPT, SQLITE_NOTADB: return .corrupt(path: path, message: message)
        case SQLITE_BUSY, SQLITE_LOCKED: return .locked(path: path, message: message)
        case SQLITE_FULL: return .full(path: path, message: message)
        case SQLITE_CANTOPEN, SQLITE_PERM, SQLITE_READONLY, SQLITE_AUTH:
            return .cannotOpen(path: path, message: message)
        default: return .sqlite(code: rc, message: message, sql: sql)
        }
    }
}
