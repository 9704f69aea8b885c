import APIKeysCore
import APIKeysSQLite
import APIKeysStore

/// What `apikeyd backup` and `apikeyd restore` report: the copy's time and contents.
public struct BackupSummary: Sendable, Hashable {
    /// When the copy was taken (milliseconds since 1970): the store as it was then.
    public var takenAtMS: Int64
    public var keys: Int
    /// The audit chain verified in the copy: its head, links and events.
    public var chainHead: AuditChain.Point
    public var links: Int
    public var events: Int
}

extension APIKeysServer {
    /// Copies the SQLite store of `configuration` to `file` (a new file) while a server may be
    /// serving it, and checks the copy before giving it that name. PostgreSQL stores are backed
    /// up with `pg_dump`: refused here. Throws ``StoreError``.
    public static func backup(_ configuration: ServerConfiguration, to file: String) async throws -> BackupSummary {
        guard configuration.databaseURL == nil else {
            throw StoreError.backup(
                "apikeyd backup copies the SQLite store; a PostgreSQL store is backed up with pg_dump (README, Backups)"
            )
        }
        let copy = try await SQLiteBackup.backup(
            from: configuration.databasePath, to: file, clock: configuration.clock)
        return BackupSummary(copy)
    }

    /// Puts the backup `file` in place as the SQLite store of `configuration`'s data directory,
    /// refusing while a server holds the directory (its lock) and, unless `replace`, when a store
    /// is there already (kept beside it when replaced). Throws ``StoreError`` or ``ServerError``.
    public static func restore(_ configuration: ServerConfiguration, from file: String, replace: Bool) async throws
        -> BackupSummary
    {
        guard configuration.databaseURL == nil else {
            throw StoreError.backup(
                "apikeyd restore restores a SQLite store; restore PostgreSQL with pg_restore or psql")
        }
        try DataDirectory.prepare(configuration.dataDirectory)
        let lock = try DataDirectoryLock(directory: configuration.dataDirectory)
        defer { lock.release() }
        let copy = try await SQLiteBackup.restore(
            from: file, to: configuration.databasePath, replace: replace, clock: configuration.clock)
        return BackupSummary(copy)
    }
}

extension BackupSummary {
    init(_ copy: SQLiteBackup.Copy) {
        self.init(
            takenAtMS: copy.takenAtMS, keys: copy.keys, chainHead: copy.chainHead, links: copy.links,
            events: copy.events)
    }
}
