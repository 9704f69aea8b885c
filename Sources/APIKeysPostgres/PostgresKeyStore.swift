import APIKeysCore
import APIKeysStore
import Dispatch
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// The store for several replicas: PostgreSQL is the source of truth, each replica's index a cache
/// of it kept current by the change feed (``ChangeFeed``).
///
/// Mutations commit in batches (``GroupCommit``), each batch one transaction: lock the key rows,
/// write them and the admin events, then take the change-log lock, append the change rows
/// (`key_changes`, one `bigserial` version each) and `NOTIFY` the last version. The lock is held
/// from the append to the commit, so versions become visible in order: a replica that sees version
/// v has every lower one that committed. The replica that made the change applies it before
/// returning (read-your-writes); the others hear the NOTIFY.
package final class PostgresKeyStore: KeyStore {
    package let index: KeyIndex
    package let auditWriter: AuditWriter
    package var freshness: StoreFreshness? { feed.freshness }
    let feed: ChangeFeed
    private let groupCommit = GroupCommit()
    let client: PostgresClient
    let location: PostgresLocation
    /// A call that does not finish within this fails (UNAVAILABLE) instead of waiting for the database.
    static let callTimeout: Duration = .seconds(10)
    private let clientTask: Task<Void, Never>
    private let logger: Logger

    private init(
        index: KeyIndex, auditWriter: AuditWriter, feed: ChangeFeed, client: PostgresClient,
        clientTask: Task<Void, Never>,
        location: PostgresLocation, logger: Logger
    ) {
        self.index = index
        self.auditWriter = auditWriter
        self.feed = feed
        self.client = client
        self.clientTask = clientTask
        self.location = location
        self.logger = logger
    }

    /// Connects, migrates (under the advisory lock), loads the index from one snapshot and starts
    /// following the change feed. Throws ``StoreError`` when the database cannot be reached or used.
    package static func open(
        location: PostgresLocation, catalog: PermissionCatalog, clock: any WallClock, auditMode: AuditMode,
        auditQueueCapacity: Int, auditRetentionMS: Int64, historyRetentionMS: Int64 = 0, maxStalenessMS: Int64,
        decorateAuditSink: AuditSinkDecorator? = nil, logger: Logger
    ) async throws -> PostgresKeyStore {
        let client = PostgresClient(configuration: location.clientConfiguration, backgroundLogger: logger)
        let clientTask = Task { await client.run() }
        let server = location.description
        do {
            let (replica, snapshot) = try await withTimeout(
                .seconds(60), timeoutError: .unreachable(server: server, message: "no answer within 60 s")
            ) {
                try await client.withConnection { connection in
                    try await PostgresSchema.migrate(connection, nowMS: clock.nowMS(), logger: logger)
                    let replica =
                        try await connection.query("SELECT nextval('replica_numbers')", logger: logger)
                        .decode(Int64.self).first { _ in true } ?? 0
                    let snapshot = try await IndexSnapshot.read(
                        connection, client: client, catalog: catalog, clock: clock, logger: logger)
                    return (replica, snapshot)
                }
            }
            let index = KeyIndex(catalog: catalog, expectedCount: snapshot.keyCount)
            index.apply(snapshot.edits)
            let freshness = StoreFreshness(maxStalenessMS: maxStalenessMS)
            freshness.confirm(atMS: snapshot.startedAtMS)
            let sink = PostgresAuditSink(client: client, server: server, index: index, logger: logger)
            let writer = AuditWriter(
                sink: decorateAuditSink?(sink) ?? sink,
                seqs: AuditSequence(.clock(replica: UInt64(replica % 256))), lastAtMS: 0, mode: auditMode, clock: clock,
                capacity: auditQueueCapacity, retentionMS: auditRetentionMS, historyRetentionMS: historyRetentionMS,
                logger: logger)
            let feed = ChangeFeed(
                index: index, snapshot: snapshot, freshness: freshness, client: client, location: location,
                replica: replica % 256, auditWriter: writer, clock: clock, logger: logger)
            feed.start()
            logger.info(
                "PostgreSQL store open",
                metadata: [
                    "database": "\(server)", "replica": "\(replica % 256)", "version": "\(snapshot.version)",
                    "history": "\(snapshot.history)",
                ])
            return PostgresKeyStore(
                index: index, auditWriter: writer, feed: feed, client: client, clientTask: clientTask,
                location: location, logger: logger)
        } catch {
            clientTask.cancel()
            throw StoreError.postgres(error, server: server)
        }
    }

    /// Applies the schema migrations not yet recorded (under the advisory lock) and returns their
    /// versions; what `apikeyd migrate` runs, and every replica at start.
    package static func migrate(location: PostgresLocation, clock: any WallClock, logger: Logger) async throws -> [Int]
    {
        let client = PostgresClient(configuration: location.clientConfiguration, backgroundLogger: logger)
        let clientTask = Task { await client.run() }
        defer { clientTask.cancel() }
        let server = location.description
        do {
            return try await withTimeout(
                .seconds(60), timeoutError: .unreachable(server: server, message: "no answer within 60 s")
            ) {
                try await client.withConnection {
                    try await PostgresSchema.migrate($0, nowMS: clock.nowMS(), logger: logger)
                }
            }
        } catch {
            throw StoreError.postgres(error, server: server)
        }
    }

    /// Another sink on this store's pool, as its audit writer's: for benchmarks that write batches
    /// back to back, without the writer's queue.
    package func makeAuditSink() -> any AuditSink {
        PostgresAuditSink(client: client, server: location.description, index: index, logger: logger)
    }

    /// Nothing to close without awaiting: the pool closes in ``close()``.
    package func closeBlocking() {}

    /// Nothing pending: admin-token changes are recorded as they are made, through a server.
    package func recordOfflineAdminChanges() async throws {}

    /// Not supported on PostgreSQL (the commit runs on the pool's connection): ignored.
    package func setCommitHook(_ hook: (@Sendable ([String]) -> Void)?) {}

    /// Not supported on PostgreSQL: ignored.
    package func simulateFullDisk(_ full: Bool) throws {}

    package func close() async {
        await feed.stop()
        clientTask.cancel()
        _ = await clientTask.value
    }

    /// Runs a read (`body`) against the pool within ``callTimeout``, errors as ``StoreError``.
    private func read<T: Sendable>(_ body: @escaping @Sendable (PostgresClient) async throws -> T) async throws -> T {
        let server = location.description
        do {
            return try await withTimeout(
                Self.callTimeout, timeoutError: .unreachable(server: server, message: "no answer within 10 s")
            ) { [client] in try await body(client) }
        } catch {
            throw StoreError.postgres(error, server: server)
        }
    }

    /// Runs a transaction (`body`; with `transaction` false, `body` must be one statement, which is
    /// its own transaction) within ``callTimeout``. Past it: nothing was changed if no connection
    /// was had by then, else the outcome is unknown.
    private func write<T: Sendable>(
        transaction: Bool = true, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let server = location.description
        let logger = logger
        let began = Atomic<Bool>(false)
        do {
            return try await withTimeout(
                Self.callTimeout, timeoutError: .unreachable(server: server, message: "no connection within 10 s")
            ) { [client] in
                try await client.withConnection { connection in
                    began.store(true, ordering: .relaxed)
                    guard transaction else { return try await body(connection) }
                    return try await connection.withTransaction(logger: logger) { try await body($0) }
                }
            }
        } catch let error as StoreError where error.code == .unreachable && began.load(ordering: .relaxed) {
            throw StoreError.outcomeUnknown(server: server, message: "no answer within 10 s")
        } catch {
            throw StoreError.postgres(error, server: server)
        }
    }

    // MARK: Keys

    package func commit<R: Sendable>(
        reading keyID: String?, authorizedBy token: SecretHash?, deadline: Deadline,
        _ decide: @escaping @Sendable (StoredKey?) throws -> KeyDecision<R>
    ) async throws -> R {
        try deadline.check()
        return try await groupCommit.run(reading: keyID, authorizedBy: token, deadline: deadline, decide) {
            await self.commitBatch($0)
        }
    }

    /// One transaction for a batch of mutations (``GroupCommit``): lock the keys they read, let
    /// each decide in turn (``GroupPlan``), then one statement (``BatchRows``) checks that the
    /// batch's admin tokens are still valid (holding them until the commit, so that a revocation
    /// waits for it), writes every key's final state and all admin events, takes the change-log
    /// lock, appends the changes and `NOTIFY`s the last version. After the commit the index has
    /// the changes before any caller hears back. When a token was revoked, the statement writes
    /// nothing: the mutations made with it are refused and the others go again.
    private func commitBatch(_ batch: [PendingMutation]) async {
        let (logger, location) = (logger, location)
        let writer = auditWriter
        let tokens = Array(Set(batch.compactMap(\.token)))
        let plan: GroupPlan
        let written: BatchRows.Written
        do {
            let ids = Set(batch.compactMap(\.keyID)).sorted()
            // Creations alone read nothing: their one statement is the whole transaction.
            (plan, written) = try await write(transaction: !ids.isEmpty) { connection in
                let read = try await KeyRows.lock(ids: ids, on: connection, logger: logger)
                let plan = GroupPlan(batch, read: read) { writer.takeSeq(atMS: $0) }
                guard !plan.changes.isEmpty || !plan.events.isEmpty || !tokens.isEmpty else {
                    return (plan, BatchRows.Written(versions: [], validTokens: []))
                }
                let written = try await BatchRows.write(
                    BatchRows.Batch(
                        tokens: tokens, inserted: plan.inserted, updated: plan.updated, deleted: plan.deleted,
                        events: plan.events, changes: plan.changes,
                        requireStandby: location.requireSynchronousStandby),
                    on: connection, logger: logger)
                return (plan, written)
            }
        } catch {
            for mutation in batch { mutation.fail(error) }
            return
        }
        let valid = Set(written.validTokens)
        guard tokens.allSatisfy(valid.contains) else {
            var again: [PendingMutation] = []
            for mutation in batch {
                if let token = mutation.token, !valid.contains(token) {
                    mutation.fail(KeyError.adminTokenNotValid)
                } else {
                    again.append(mutation)
                }
            }
            if !again.isEmpty { await commitBatch(again) }
            return
        }
        let catalog = index.catalog
        let changes = zip(BatchRows.changeRows(of: plan.changes), written.versions).map { row, version in
            ChangeRows.Change(
                version: version, keyID: row.key.id, keyName: row.key.name,
                edit: row.entry.edit(for: row.key, in: catalog))
        }
        await feed.applyOwn(changes)
        plan.answer(batch)
    }

    package func key(id: String) async throws -> KeyRecord {
        let logger = logger
        guard
            let found = try await read({ client in
                try await client.withConnection { try await KeyRows.find(id: id, on: $0, logger: logger) }
            })
        else { throw KeyError.keyNotFound(id: id) }
        return found.key
    }

    package func keys(after: Int64, limit: Int) async throws -> [(position: Int64, key: KeyRecord)] {
        let logger = logger
        return try await read { client in
            try await client.withConnection {
                try await KeyRows.page(after: after, limit: limit, on: $0, logger: logger)
            }
        }.map { (position: $0.0, key: $0.1) }
    }

    // MARK: Admin tokens

    package func createAdminToken(name: String, hash: SecretHash, grant: AdminGrant, event: AuditRecord) async throws {
        let logger = logger
        var event = event
        event.seq = auditWriter.takeSeq(atMS: event.atMS)
        let columns = StoredColumns.encodeGrant(grant)
        try await write { [event] connection in
            try await connection.query(
                """
                INSERT INTO admin_tokens (name, token_hash, created_at_ms, scope, ceiling, max_key_lifetime_ms,
                                          expires_at_ms)
                VALUES (\(name), \(hash.bytea), \(event.atMS), \(columns.scope), \(columns.ceiling),
                        \(columns.maxKeyLifetimeMS), \(columns.expiresAtMS))
                """,
                logger: logger)
            try await AuditChainRows.append([event], on: connection, logger: logger)
        }
    }

    package func revokeAdminToken(name: String, event: AuditRecord) async throws -> Bool {
        let logger = logger
        var event = event
        event.seq = auditWriter.takeSeq(atMS: event.atMS)
        return try await write { [event] connection in
            let deleted = try await connection.query(
                "DELETE FROM admin_tokens WHERE name = \(name) RETURNING pk", logger: logger
            ).decode(Int64.self).first { _ in true }
            guard deleted != nil else { return false }
            try await AuditChainRows.append([event], on: connection, logger: logger)
            return true
        }
    }

    package func adminToken(hash: SecretHash) async throws -> AdminTokenInfo? {
        try await read { client in
            for try await row in try await client.query(
                "SELECT \(unescaped: Self.adminTokenColumns) FROM admin_tokens WHERE token_hash = \(hash.bytea)")
            {
                return try Self.adminToken(row)
            }
            return nil
        }
    }

    package func adminTokens() async throws -> [AdminTokenInfo] {
        try await read { client in
            var tokens: [AdminTokenInfo] = []
            for try await row in try await client.query(
                "SELECT \(unescaped: Self.adminTokenColumns) FROM admin_tokens ORDER BY pk")
            {
                tokens.append(try Self.adminToken(row))
            }
            return tokens
        }
    }

    private static let adminTokenColumns =
        "name, created_at_ms, scope, ceiling, max_key_lifetime_ms, expires_at_ms, last_used_at_ms"

    package func adminTokensByHash() async throws -> [SecretHash: AdminTokenInfo] {
        try await read { client in
            var tokens: [SecretHash: AdminTokenInfo] = [:]
            for try await row in try await client.query(
                "SELECT \(unescaped: Self.adminTokenColumns), token_hash FROM admin_tokens")
            {
                let token = try Self.adminToken(row)
                guard let hash = SecretHash(bytea: try row.makeRandomAccess()["token_hash"].decode(ByteBuffer.self))
                else {
                    throw StoreError.database(
                        server: "", message: "admin token \(token.name) has a secret hash of the wrong size")
                }
                tokens[hash] = token
            }
            return tokens
        }
    }

    /// An admin token in a row holding ``adminTokenColumns``, read by column name.
    private static func adminToken(_ row: PostgresRow) throws -> AdminTokenInfo {
        let cells = row.makeRandomAccess()
        return AdminTokenInfo(
            name: try cells["name"].decode(String.self),
            grant: StoredColumns.decodeGrant(
                scope: try cells["scope"].decode(String.self), ceiling: try cells["ceiling"].decode(String?.self),
                maxKeyLifetimeMS: try cells["max_key_lifetime_ms"].decode(Int64?.self),
                expiresAtMS: try cells["expires_at_ms"].decode(Int64?.self)),
            createdAtMS: try cells["created_at_ms"].decode(Int64.self),
            lastUsedAtMS: try cells["last_used_at_ms"].decode(Int64.self))
    }

    package func recordAdminTokenUse(hash: SecretHash, atMS: Int64) async throws {
        let logger = logger
        try await write(transaction: false) { connection in
            try await connection.query(
                """
                UPDATE admin_tokens SET last_used_at_ms = \(atMS)
                WHERE token_hash = \(hash.bytea) AND last_used_at_ms < \(atMS)
                """, logger: logger)
        }
    }

    // MARK: Audit trail

    package func auditPage(_ query: AuditQuery, beforeSeq: Int64, limit: Int) async throws -> [AuditRecord] {
        let logger = logger
        return try await read { client in
            try await client.withConnection { connection in
                // Rows (admin events, summaries, and checks stored before migration 12) and
                // batches, merged by seq, from one snapshot.
                try await connection.withTransaction(logger: logger) { connection in
                    try await connection.query(
                        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", logger: logger)
                    let rows = try await AuditRows.page(
                        query, beforeSeq: beforeSeq, limit: limit, on: connection, logger: logger)
                    let batched = try await APIRequestBatchRows.page(
                        query, beforeSeq: beforeSeq, limit: limit, on: connection, logger: logger)
                    guard !batched.isEmpty else { return rows }
                    return Array((rows + batched).sorted { $0.seq > $1.seq }.prefix(limit))
                }
            }
        }
    }

    package func auditChainPage(after position: UInt64, sinceMS: Int64?, maxLinks: Int, maxBytes: Int) async throws
        -> AuditChain.Page
    {
        let logger = logger
        return try await read { client in
            try await client.withConnection {
                try await AuditChainRows.page(
                    after: position, sinceMS: sinceMS, maxLinks: maxLinks, maxBytes: maxBytes, on: $0, logger: logger)
            }
        }
    }

    package func oldestRetainedAtMS() async throws -> Int64? {
        try await read { client in
            try await client.query(
                "SELECT least((SELECT min(at_ms) FROM audit_events), (SELECT min(first_at_ms) FROM api_request_batches))"
            ).decode(Int64?.self).first { _ in true } ?? nil
        }
    }
}
