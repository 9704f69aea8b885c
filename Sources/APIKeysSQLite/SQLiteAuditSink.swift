import APIKeysCore
import APIKeysStore
import Foundation
import Synchronization

/// The audit writer's own SQLite connection: api.request events as ``APIRequestBatchTable``
/// rows, summaries and admin-less rows in `audit_events`, last-used times in `keys`.
final class SQLiteAuditSink: AuditSink, @unchecked Sendable {
    // Used by the writer's thread only (the protocol's contract), hence unchecked.
    private let connection: SQLiteConnection
    /// Tests only: a full-disk simulation (``forbidGrowth(_:)``) for the writer's thread to apply
    /// to the connection before its next transaction.
    private let pendingGrowthLimit = Mutex<Bool?>(nil)

    init(connection: SQLiteConnection) {
        self.connection = connection
        // The writer appends to the audit tables and updates last-used times all day: a 32 MB page
        // cache keeps their hot pages in memory instead of re-reading them with a syscall per miss
        // (measured with one row per check; kept for the batch tables and the keys table).
        try? connection.execute("PRAGMA cache_size = -32000")
        // Debian's SQLite overwrites deleted content with zeros (SECURE_DELETE), doubling the I/O
        // of pruning; audit events hold no secret, so only free what costs no extra write.
        try? connection.execute("PRAGMA secure_delete = FAST")
    }

    func write(_ individual: [AuditRecord], summaries: [AuditRecord], lastUsed: [String: KeyUse]) throws {
        applyGrowthLimit()
        var events = individual
        if !summaries.isEmpty {
            events += summaries
            events.sort { $0.seq < $1.seq }
        }
        try connection.transaction {
            let insert = try AuditTable.insertStatement(in: connection)
            try AuditChainTable.append(
                events, maxEvents: AuditChain.maxEventsPerLink, maxBytes: AuditChain.maxLinkBytes, in: connection
            ) { link, id in
                // Packed batches hold no detail but a grace secret's mark: an event with another
                // detail is a row of its own, as summaries are.
                let packable = APIRequestPacking.allPack(link)
                try APIRequestBatchTable.insert(
                    packable ? link : ArraySlice(link.filter(APIRequestPacking.packs)), link: id, in: connection)
                if !packable {
                    for event in link where !APIRequestPacking.packs(event) {
                        try AuditTable.insert(event, link: id, using: insert)
                    }
                }
            }
            try KeyTable.touch(lastUsed, in: connection)
        }
    }

    func pruneStep(
        _ cutoffs: AuditRetention.Cutoffs,
        recording record: @escaping @Sendable (AuditRetention.Pruned) -> AuditRecord
    ) throws
        -> AuditRetention.Pruned
    {
        applyGrowthLimit()
        return try connection.transaction {
            let pruned = try SQLiteAuditRetention.pruneStep(cutoffs, in: connection)
            if !pruned.isEmpty { try AuditChainTable.appendRows([record(pruned)], in: connection) }
            return pruned
        }
    }

    func reclaimSpace() throws { try SQLiteAuditRetention.reclaimSpace(in: connection) }

    func freeBytes() -> Int64? {
        var info = statvfs()
        let directory = (connection.path as NSString).deletingLastPathComponent
        guard statvfs(directory.isEmpty ? "." : directory, &info) == 0 else { return nil }
        return Int64(info.f_bavail) * Int64(info.f_frsize)
    }

    /// Tests only: from its next transaction on, the writer's connection may not grow the
    /// database (SQLITE_FULL, as on a full disk), or may again. Any thread; applied on the writer's.
    func forbidGrowth(_ forbid: Bool) {
        pendingGrowthLimit.withLock { $0 = forbid }
    }

    private func applyGrowthLimit() {
        guard let forbid = pendingGrowthLimit.withLock({ $0.take() }) else { return }
        do { try connection.forbidGrowth(forbid) } catch {
            // Only a test asks; its next write fails or succeeds as the disk allows.
            pendingGrowthLimit.withLock { $0 = $0 ?? forbid }
        }
    }

    func close() { connection.close() }
}
