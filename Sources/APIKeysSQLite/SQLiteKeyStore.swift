import APIKeysCore
import APIKeysStore
import Dispatch
import Logging
import Synchronization

/// The embedded store: one SQLite file in WAL mode, for one server.
///
/// Two connections: the admin one (serialised by a `Mutex`; every mutation and its audit event in
/// one `BEGIN IMMEDIATE` transaction) and the audit writer's. Blocking work runs on a dispatch
/// queue, never on the caller's executor.
package final class SQLiteKeyStore: KeyStore {
    package let index: KeyIndex
    package let auditWriter: AuditWriter
    /// The writer's sink, for ``simulateFullDisk(_:)``.
    private let auditSink: SQLiteAuditSink
    package var freshness: StoreFreshness? { nil }
    /// Tests only: runs after a mutation committed, before its index change, with the key ids.
    package let commitHook = Mutex<(@Sendable ([String]) -> Void)?>(nil)
    let path: String
    private let admin: Mutex<SQLiteConnection?>
    private let clock: any WallClock
    private let queue = DispatchQueue(label: "apikeys.sqlite-admin")

    private init(
        path: String, index: KeyIndex, admin: SQLiteConnection, auditWriter: AuditWriter, auditSink: SQLiteAuditSink,
        clock: any WallClock
    ) {
        self.path = path
        self.index = index
        self.admin = Mutex(admin)
        self.auditWriter = auditWriter
        self.auditSink = auditSink
        self.clock = clock
    }

    /// Opens (creating and migrating if needed) the database at `path` and loads the check index.
    /// Throws ``StoreError`` for a file that is unreadable, locked or corrupt.
    package static func open(
        path: String, catalog: PermissionCatalog, clock: any WallClock, auditMode: AuditMode, auditQueueCapacity: Int,
        auditRetentionMS: Int64, historyRetentionMS: Int64 = 0, busyTimeoutMS: Int32, minFreeDiskBytes: Int64,
        decorateAuditSink: AuditSinkDecorator? = nil, logger: Logger
    ) throws -> SQLiteKeyStore {
        let db = try SQLiteConnection(path: path, busyTimeoutMS: busyTimeoutMS)
        try Schema.migrate(db, nowMS: clock.nowMS())
        let last = try AuditTable.last(in: db)
        let index = KeyIndex(catalog: catalog, expectedCount: try KeyTable.count(in: db))
        let sink = SQLiteAuditSink(connection: try SQLiteConnection(path: path, busyTimeoutMS: busyTimeoutMS))
        let writer = AuditWriter(
            sink: decorateAuditSink?(sink) ?? sink,
            seqs: AuditSequence(.dense, after: last.seq), lastAtMS: last.batchAtMS, mode: auditMode, clock: clock,
            capacity: auditQueueCapacity, retentionMS: auditRetentionMS, historyRetentionMS: historyRetentionMS,
            minFreeDiskBytes: minFreeDiskBytes,
            logger: logger)
        let store = SQLiteKeyStore(
            path: path, index: index, admin: db, auditWriter: writer, auditSink: sink, clock: clock)
        do {
            try KeyTable.load(into: index, in: db)
        } catch {
            writer.closeBlocking()
            store.closeAdmin()
            throw error
        }
        return store
    }

    package func close() async { closeAdmin() }

    func closeAdmin() {
        admin.withLock { db in
            db?.close()
            db = nil
        }
    }

    /// Runs `body` with the admin connection, under its lock, on the store's queue.
    private func onAdmin<R: Sendable>(_ body: @escaping @Sendable (SQLiteConnection) throws -> R) async throws -> R {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try self.withAdmin(body) }) }
        }
    }

    /// Runs `body` with the admin connection, under its lock, on the caller's thread.
    func withAdmin<R>(_ body: (SQLiteConnection) throws -> R) throws -> R {
        try admin.withLock { db in
            guard let db else { throw StoreError.closed }
            return try body(db)
        }
    }

    // MARK: Keys

    /// Under the admin lock: refuse a passed deadline before BEGIN, run the transaction (rolled
    /// back if the deadline passes before COMMIT), then apply the index changes of what committed.
    /// The index therefore changes in commit order: a later mutation of the same key (a delete
    /// landing right after a create) can never be undone by an earlier one's index update.
    package func commit<R: Sendable>(
        reading keyID: String?, authorizedBy token: SecretHash?, deadline: Deadline,
        _ decide: @escaping @Sendable (StoredKey?) throws -> KeyDecision<R>
    ) async throws -> R {
        try await onAdmin { db in
            // A change made with a token follows the admin-token changes made before it (see below).
            if token != nil { try self.recordPendingAdminEvents(in: db) }
            return try self.commitNow(reading: keyID, authorizedBy: token, deadline: deadline, in: db, decide)
        }
    }

    private func commitNow<R>(
        reading keyID: String?, authorizedBy token: SecretHash? = nil, deadline: Deadline, in db: SQLiteConnection,
        _ decide: (StoredKey?) throws -> KeyDecision<R>
    ) throws -> R {
        try deadline.check()
        let decision = try db.transaction(beforeCommit: { try deadline.check() }) {
            if let token, try Self.adminToken(hash: token, in: db) == nil { throw KeyError.adminTokenNotValid }
            let current = try keyID.map { id in try KeyTable.find(id: id, in: db) }
            let decision = try decide(current)
            for write in decision.writes {
                switch write {
                case .insert(let key, let hash): try KeyTable.insert(key, hash: hash, in: db)
                case .update(let key, let hash, let grace, _):
                    try KeyTable.update(key, hash: hash, graceHash: grace, in: db)
                case .delete(let key, _): try KeyTable.delete(id: key.id, in: db)
                }
            }
            try record(decision.events, in: db)
            return decision
        }
        commitHook.withLock { $0 }?(decision.writes.map(\.key.id))
        index.apply(decision.writes)
        return decision.result
    }

    /// Writes admin events in the caller's transaction, numbered now, as one link of the chain.
    private func record(_ events: [AuditRecord], in db: SQLiteConnection) throws {
        let numbered = events.map { event in
            var event = event
            event.seq = auditWriter.takeSeq(atMS: event.atMS)
            return event
        }
        try AuditChainTable.appendRows(numbered, in: db)
    }

    package func key(id: String) async throws -> KeyRecord {
        try await onAdmin { try KeyTable.find(id: id, in: $0).key }
    }

    package func keys(after: Int64, limit: Int) async throws -> [(position: Int64, key: KeyRecord)] {
        try await onAdmin { db in try KeyTable.page(afterPK: after, limit: limit, in: db).map { ($0.pk, $0.key) } }
    }

    // MARK: Admin tokens

    package func createAdminToken(name: String, hash: SecretHash, grant: AdminGrant, event: AuditRecord) async throws {
        let columns = StoredColumns.encodeGrant(grant)
        try await onAdmin { db in
            try db.transaction {
                try db.statement(
                    """
                    INSERT INTO admin_tokens (name, token_hash, created_at_ms, scope, ceiling, max_key_lifetime_ms,
                                              expires_at_ms)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """
                )
                .bind(
                    .text(name), .blob(hash.digest), .integer(event.atMS), .text(columns.scope),
                    columns.ceiling.map(SQLiteValue.text) ?? .null, .optional(columns.maxKeyLifetimeMS),
                    .optional(columns.expiresAtMS)
                ).run()
                try Self.recordPending(event, in: db)
            }
        }
    }

    package func revokeAdminToken(name: String, event: AuditRecord) async throws -> Bool {
        try await onAdmin { db in
            try db.transaction {
                try db.statement("DELETE FROM admin_tokens WHERE name = ?").bind(.text(name)).run()
                guard db.changes > 0 else { return false }
                try Self.recordPending(event, in: db)
                return true
            }
        }
    }

    package func adminToken(hash: SecretHash) async throws -> AdminTokenInfo? {
        try await onAdmin { db in
            try self.recordPendingAdminEvents(in: db)
            return try Self.adminToken(hash: hash, in: db)
        }
    }

    private static let adminTokenColumns =
        "name, created_at_ms, scope, ceiling, max_key_lifetime_ms, expires_at_ms, last_used_at_ms"

    package func adminTokensByHash() async throws -> [SecretHash: AdminTokenInfo] {
        try await onAdmin { db in
            var tokens: [SecretHash: AdminTokenInfo] = [:]
            // The hash after ``adminTokenColumns``, which ``adminToken(row:)`` reads by position.
            for (hash, token) in try db.statement("SELECT \(Self.adminTokenColumns), token_hash FROM admin_tokens")
                .rows({ (SecretHash(digest: $0.blob(7)), Self.adminToken(row: $0)) })
            {
                guard let hash else {
                    throw StoreError.corrupt(
                        path: db.path, message: "admin token \(token.name) has a secret hash of the wrong size")
                }
                tokens[hash] = token
            }
            return tokens
        }
    }

    private static func adminToken(hash: SecretHash, in db: SQLiteConnection) throws -> AdminTokenInfo? {
        try db.statement("SELECT \(adminTokenColumns) FROM admin_tokens WHERE token_hash = ?").bind(
            .blob(hash.digest)
        ).firstRow(Self.adminToken(row:))
    }

    private static func adminToken(row: SQLiteStatement) -> AdminTokenInfo {
        AdminTokenInfo(
            name: row.text(0),
            grant: StoredColumns.decodeGrant(
                scope: row.text(2), ceiling: row.isNull(3) ? nil : row.text(3), maxKeyLifetimeMS: row.optionalInt64(4),
                expiresAtMS: row.optionalInt64(5)),
            createdAtMS: row.int64(1), lastUsedAtMS: row.int64(6))
    }

    package func recordAdminTokenUse(hash: SecretHash, atMS: Int64) async throws {
        try await onAdmin { db in
            try db.statement(
                "UPDATE admin_tokens SET last_used_at_ms = ? WHERE token_hash = ? AND last_used_at_ms < ?"
            ).bind(.integer(atMS), .blob(hash.digest), .integer(atMS)).run()
        }
    }

    package func adminTokens() async throws -> [AdminTokenInfo] {
        try await onAdmin {
            try $0.statement("SELECT \(Self.adminTokenColumns) FROM admin_tokens ORDER BY pk").rows(
                Self.adminToken(row:))
        }
    }

    /// Gives the admin-token records waiting in the database their place in the audit trail.
    ///
    /// Admin tokens are also created and revoked by `apikeyd admin-token`, a process of its own
    /// beside the running server; only the server numbers audit events (its sequence counter runs
    /// ahead of the database while checks are queued), so every such change is stored as pending
    /// in its own transaction and numbered here: when the server starts
    /// (`KeyService.prepareToServe()`) and before every KeyAdmin call (``adminTokenName(hash:)``),
    /// so it is listed from the first call after the change. Each record is stamped with the time
    /// it is numbered (times in the trail never go backwards); its detail says when the change was made.
    package func recordOfflineAdminChanges() async throws {
        try await onAdmin { db in try self.recordPendingAdminEvents(in: db) }
    }

    private func recordPendingAdminEvents(in db: SQLiteConnection) throws {
        let waiting =
            try db.statement("SELECT EXISTS (SELECT 1 FROM pending_admin_events)").firstRow { $0.int64(0) } == 1
        guard waiting else { return }
        let _: Void = try commitNow(reading: nil, deadline: .never, in: db) { _ in
            let pending = try db.statement(
                "SELECT id, at_ms, action, actor, detail FROM pending_admin_events ORDER BY id"
            )
            .rows { row in (row.int64(0), row.int64(1), row.text(2), row.text(3), row.text(4)) }
            let now = self.clock.nowMS()
            let events = try pending.map { _, madeAt, action, actor, detail in
                guard let action = AuditAction(rawValue: action) else {
                    throw StoreError.corrupt(path: db.path, message: "a pending admin event has action \"\(action)\"")
                }
                return AuditRecord(
                    atMS: now, action: action, keyID: "", keyName: "", actor: actor,
                    detail: "\(detail) at \(KeyService.describe(madeAt))")
            }
            if let last = pending.last?.0 {
                try db.statement("DELETE FROM pending_admin_events WHERE id <= ?").bind(.integer(last)).run()
            }
            return KeyDecision(result: (), events: events)
        }
    }

    private static func recordPending(_ event: AuditRecord, in db: SQLiteConnection) throws {
        try db.statement("INSERT INTO pending_admin_events (at_ms, action, actor, detail) VALUES (?, ?, ?, ?)")
            .bind(.integer(event.atMS), .text(event.action.rawValue), .text(event.actor), .text(event.detail)).run()
    }

    // MARK: Audit trail

    package func auditPage(_ query: AuditQuery, beforeSeq: Int64, limit: Int) async throws -> [AuditRecord] {
        try await onAdmin { try AuditTable.page(query, beforeSeq: beforeSeq, limit: limit, in: $0) }
    }

    package func oldestRetainedAtMS() async throws -> Int64? {
        try await onAdmin { try SQLiteAuditRetention.oldestRetainedAtMS(in: $0) }
    }

    package func auditChainPage(after position: UInt64, sinceMS: Int64?, maxLinks: Int, maxBytes: Int) async throws
        -> AuditChain.Page
    {
        try await onAdmin {
            try AuditChainTable.page(after: position, sinceMS: sinceMS, maxLinks: maxLinks, maxBytes: maxBytes, in: $0)
        }
    }

    package func closeBlocking() { closeAdmin() }

    package func setCommitHook(_ hook: (@Sendable ([String]) -> Void)?) { commitHook.withLock { $0 = hook } }

    /// Tests only: the database may not grow (both connections then get SQLITE_FULL, as on a full disk).
    package func simulateFullDisk(_ full: Bool) throws {
        try withAdmin { try $0.forbidGrowth(full) }
        auditSink.forbidGrowth(full)
    }
}
