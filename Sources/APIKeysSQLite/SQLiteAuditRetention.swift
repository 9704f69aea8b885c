import APIKeysCore
import APIKeysStore

/// Pruning on SQLite: whole api.request batches (every event of the batch is older) and rows of
/// `audit_events`, in the audit writer's own transactions, and the space given back to the file
/// system.
enum SQLiteAuditRetention {
    typealias Pruned = AuditRetention.Pruned

    /// Batches and rows removed in one transaction at most: a backlog of expired events (after
    /// lowering the retention) is pruned in steps, each short enough not to hold the writer long.
    static let maxBatchesPerStep = 256
    static let maxRowsPerStep = 10_000

    /// Traffic links emptied into gaps in one transaction at most.
    static let maxGapLinksPerStep = 4096

    /// Removes up to one step of events past `cutoffs`; the caller records the result. Links of
    /// the chain go oldest first, whole, and move its anchor (``AuditChainTable``); once history
    /// that is kept stops that, older traffic links are emptied into gaps; events stored before
    /// the chain existed go by time, as they always did (history only past its own cutoff).
    static func pruneStep(_ cutoffs: AuditRetention.Cutoffs, in db: SQLiteConnection) throws -> Pruned {
        let cutoffMS = cutoffs.trafficMS
        var chained = try AuditChainTable.pruneStep(cutoffs, maxLinks: maxBatchesPerStep, in: db)
        if chained.links == 0 {
            chained = try AuditChainTable.makeGaps(
                olderThan: AuditRetention.gapCutoff(cutoffMS), maxLinks: maxGapLinksPerStep, in: db)
        }
        var pruned = Pruned(
            batches: chained.batches, batchedEvents: chained.batchedEvents, rows: chained.rows, links: chained.links,
            anchor: chained.anchor, gaps: chained.gaps)
        // Times never decrease with seq, so expired batches are the oldest ones: a range of
        // first_seq, which the by-time index finds without a scan.
        let expired = try db.statement(
            """
            SELECT first_seq, count FROM api_request_batches
            WHERE first_at_ms < ?1 AND last_at_ms < ?1 AND link IS NULL ORDER BY first_at_ms, first_seq LIMIT ?2
            """
        ).bind(.integer(cutoffMS), .integer(Int64(maxBatchesPerStep))).rows { ($0.int64(0), $0.int64(1)) }
        if let last = expired.last?.0 {
            let first = expired[0].0
            try db.statement("DELETE FROM api_request_batch_keys WHERE first_seq BETWEEN ? AND ?")
                .bind(.integer(first), .integer(last)).run()
            try db.statement("DELETE FROM api_request_batches WHERE first_seq BETWEEN ? AND ? AND link IS NULL")
                .bind(.integer(first), .integer(last)).run()
            pruned.batches += expired.count
            pruned.batchedEvents += Int(expired.reduce(0) { $0 + $1.1 })
        }
        try db.statement(
            """
            DELETE FROM audit_events WHERE seq IN (
                SELECT seq FROM audit_events WHERE at_ms < ?1 AND link IS NULL
                AND (action IN ('api.request', 'admin.permission_denied') OR at_ms < ?3) LIMIT ?2)
            """
        ).bind(.integer(cutoffMS), .integer(Int64(maxRowsPerStep)), .integer(cutoffs.historyMS ?? .min)).run()
        pruned.rows += db.changes
        return pruned
    }

    /// Gives the pages freed by pruning back to the file system (auto_vacuum is incremental).
    static func reclaimSpace(in db: SQLiteConnection) throws {
        try db.execute("PRAGMA incremental_vacuum")
    }

    /// The time of the oldest event kept, nil when there is none.
    static func oldestRetainedAtMS(in db: SQLiteConnection) throws -> Int64? {
        let batch =
            try db.statement("SELECT min(first_at_ms) FROM api_request_batches").firstRow {
                $0.optionalInt64(0)
            } ?? nil
        let row = try db.statement("SELECT min(at_ms) FROM audit_events").firstRow { $0.optionalInt64(0) } ?? nil
        return [batch, row].compactMap { $0 }.min()
    }
}
