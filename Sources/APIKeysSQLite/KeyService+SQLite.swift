import APIKeysCore
import APIKeysStore
import Logging

extension KeyService {
    /// Opens (creating and migrating if needed) the SQLite database at `path` and loads the check
    /// index. Throws ``StoreError`` for a file that is unreadable, locked or corrupt.
    public static func open(
        path: String, catalog: PermissionCatalog = .standard, format: SecretFormat = .standard,
        clock: any WallClock = SystemWallClock(), auditMode: AuditMode = .full,
        auditQueueCapacity: Int = defaultAuditQueueCapacity,
        auditRetentionMS: Int64 = 0, adminAuditRetentionMS: Int64 = 0, busyTimeoutMS: Int32 = 5000,
        maxKeyLifetimeMS: Int64? = nil,
        minFreeDiskBytes: Int64 = defaultMinFreeDiskBytes, logger: Logger = Logger(label: "apikeys.store")
    ) throws -> KeyService {
        let store = try SQLiteKeyStore.open(
            path: path, catalog: catalog, clock: clock, auditMode: auditMode, auditQueueCapacity: auditQueueCapacity,
            auditRetentionMS: auditRetentionMS, historyRetentionMS: adminAuditRetentionMS, busyTimeoutMS: busyTimeoutMS,
            minFreeDiskBytes: minFreeDiskBytes,
            logger: logger)
        return KeyService(
            store: store, format: format, clock: clock, maxKeyLifetimeMS: maxKeyLifetimeMS, logger: logger)
    }
}
