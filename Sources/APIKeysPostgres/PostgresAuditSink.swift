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
        let events = summaries.isEmpty ? individual : individual + summaries
        let prepared = AuditChainRows.Prepared(
            events, maxEvents: AuditChain.maxEventsPerLink, maxBytes: AuditChain.maxLinkBytes)
        let stored = try runBlocking {
            do {
                return try await withTimeout(
                    Self.writeTimeout, timeoutError: .unreachable(server: server, message: "no answer within 10 s")
                ) {
                    try await client.withTransaction(logger: logger) { connection -> [String: Int64] in
                        // A retry of a batch whose commit went through but whose answer was lost
                        // (a timeout): written already, credits spent included.
                        if let first = prepared.firstSeq,
                            try await AuditChainRows.isStored(seq: first, on: connection, logger: logger)
                        {
                            return [:]
                        }
                        // The keys' rows before the chain's: a mutation holds its keys' rows, then the chain.
                        let stored = try await KeyRows.touch(lastUsed, on: connection, logger: logger)
                        try await AuditChainRows.append(prepared, on: connection, logger: logger)
                        return stored
                    }
                }
            } catch {
                throw StoreError.postgres(error, server: server)
            }
        }
        index.noteStoredSpending(stored)
    }

    func pruneStep(
        _ cutoffs: AuditRetention.Cutoffs,
        recording record: @escaping @Sendable (AuditRetention.Pruned) -> AuditRecord
    ) throws -> AuditRetention.Pruned {
        let (client, logger, server) = (client, logger, server)
        return try runBlocking {
            do {
                return try await client.withTransaction(logger: logger) { connection in
                    let pruned = try await AuditChainRows.pruneStep(cutoffs, on: connection, logger: logger)
                    if !pruned.isEmpty {
                        try await AuditChainRows.append([record(pruned)], on: connection, logger: logger)
                    }
                    return pruned
                }
            } catch {
                throw StoreError.postgres(error, server: server)
            }
        }
    }

    /// PostgreSQL's autovacuum reuses the space of deleted rows.
    func reclaimSpace() throws {}

    /// The database server's disk is watched by its operator, not from here.
    func freeBytes() -> Int64? { nil }

    /// The pool is the store's; it closes it.
    func close() {}
}
