import APIKeysCore
import APIKeysStore
import Logging
import PostgresNIO

/// The audit writer's way into PostgreSQL: each batch is one transaction of one multi-row INSERT
/// (arrays through `unnest`) and one UPDATE of last-used times, through the pool. The writer's
/// thread waits for it (``runBlocking(_:)``), as it waits for SQLite's commit.
final class PostgresAuditSink: AuditSink {
    private let client: PostgresClient
    private let server: String
    /// Told the spent credit counts each batch leaves stored (other replicas' checks included).
    private let index: KeyIndex
    private let logger: Logger
    /// A batch not committed within this is retried (the writer keeps its events).
    static let writeTimeout: Duration = .seconds(10)

    init(client: PostgresClient, server: String, index: KeyIndex, logger: Logger) {
        self.client = client
        self.server = server
        self.index = index
        self.logger = logger
    }

    func write(_ individual: [AuditRecord], summaries: [AuditRecord], lastUsed: [String: KeyUse]) throws {
        let (client, logger, server) = (client, logger, server)
        let stored = try runBlocking {
            do {
                return try await withTimeout(
                    Self.writeTimeout, timeoutError: .unreachable(server: server, message: "no answer within 10 s")
                ) {
                    try await client.withTransaction(logger: logger) { connection in
                        try await AuditRows.insert(individual + summaries, on: connection, logger: logger)
                        return try await KeyRows.touch(lastUsed, on: connection, logger: logger)
                    }
                }
            } catch {
                throw StoreError.postgres(error, server: server)
            }
        }
        index.noteStoredSpending(stored)
    }

    func pruneStep(
        olderThan cutoffMS: Int64, recording record: @escaping @Sendable (AuditRetention.Pruned) -> AuditRecord
    ) throws -> AuditRetention.Pruned {
        let (client, logger, server) = (client, logger, server)
        return try runBlocking {
            do {
                return try await client.withTransaction(logger: logger) { connection in
                    let rows = try await connection.query(
                        """
                        DELETE FROM audit_events WHERE seq IN (
                            SELECT seq FROM audit_events WHERE at_ms < \(cutoffMS) ORDER BY at_ms LIMIT 10000)
                        RETURNING 1
                        """, logger: logger)
                    var count = 0
                    for try await _ in rows.decode(Int32.self) { count += 1 }
                    let pruned = AuditRetention.Pruned(rows: count)
                    if count > 0 { try await AuditRows.insert([record(pruned)], on: connection, logger: logger) }
                    return pruned
                }
            } catch {
                throw StoreError.postgres(error, server: server)
            }
        }
    }

    /// PostgreSQL's autovacuum reuses the space of deleted rows.
    func reclaimSpace() throws {}

    /// Not simulated on PostgreSQL.
    func forbidGrowth(_ forbid: Bool) throws {}

    /// The pool is the store's; it closes it.
    func close() {}
}
