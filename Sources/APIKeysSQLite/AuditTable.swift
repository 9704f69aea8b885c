import APIKeysCore
import APIKeysStore

/// SQL for the audit trail: admin events (and aggregated summaries) as rows of `audit_events`,
/// individual `api.request` events in ``APIRequestBatchTable``.
enum AuditTable {
    /// The prepared INSERT, to reuse for every event of a batch.
    static func insertStatement(in db: SQLiteConnection) throws -> SQLiteStatement {
        try db.statement(
            """
            INSERT INTO audit_events (seq, at_ms, action, key_id, key_name, actor, detail, denial, permissions,
                                      resource, client_address, link)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
    }

    /// Stores `event` as a row of the chain's link `link` (``AuditChainTable/append(_:maxEvents:in:store:)``).
    static func insert(_ event: AuditRecord, link: Int64, using statement: SQLiteStatement) throws {
        statement.reset()
        try statement.bind(
            .integer(Int64(bitPattern: event.seq)), .integer(event.atMS), .text(event.action.rawValue),
            .text(event.keyID), .text(event.keyName), .text(event.actor), .text(event.detail),
            .optional(event.denial.map { Int64($0.rawValue) }),
            .text(StoredColumns.encodePermissions(event.permissions)),
            .text(event.resource), .text(event.clientAddress), .integer(link)
        ).run()
    }

    /// Up to `limit` events matching `query` with seq below `beforeSeq`, newest first, from both
    /// the rows and the api.request batches.
    static func page(_ query: AuditQuery, beforeSeq: Int64, limit: Int, in db: SQLiteConnection) throws -> [AuditRecord]
    {
        let rows = try rowPage(query, beforeSeq: beforeSeq, limit: limit, in: db)
        guard query.action == nil || query.action == .apiRequest else { return rows }
        let batched = try APIRequestBatchTable.page(query, beforeSeq: beforeSeq, limit: limit, in: db)
        guard !batched.isEmpty else { return rows }
        return Array((rows + batched).sorted { $0.seq > $1.seq }.prefix(limit))
    }

    /// The rows of `audit_events` for ``page(_:beforeSeq:limit:in:)``.
    private static func rowPage(_ query: AuditQuery, beforeSeq: Int64, limit: Int, in db: SQLiteConnection) throws
        -> [AuditRecord]
    {
        // Only the filters given become conditions, so SQLite can pick the index that fits
        // (at most 16 distinct statements, each prepared once). For an admin action the literal
        // `action != 'api.request'` lets it use the partial index audit_events_by_admin_action.
        var conditions = ["seq < ?"]
        var values: [SQLiteValue] = [.integer(beforeSeq)]
        if let keyID = query.keyID {
            conditions.append("key_id = ?")
            values.append(.text(keyID))
        }
        if let action = query.action {
            conditions.append(action == .apiRequest ? "action = ?" : "action = ? AND action != 'api.request'")
            values.append(.text(action.rawValue))
        }
        if let since = query.sinceMS {
            conditions.append("at_ms >= ?")
            values.append(.integer(since))
        }
        if let until = query.untilMS {
            conditions.append("at_ms < ?")
            values.append(.integer(until))
        }
        values.append(.integer(Int64(limit)))
        let statement = try db.statement(
            """
            SELECT \(columns) FROM audit_events WHERE \(conditions.joined(separator: " AND ")) ORDER BY seq DESC LIMIT ?
            """)
        try statement.bind(values)
        return try statement.rows { try record(from: $0, in: db) }
    }

    /// The columns ``record(from:in:)`` reads, in its order.
    static let columns =
        "seq, at_ms, action, key_id, key_name, actor, detail, denial, permissions, resource, client_address"

    /// The event in a row of ``columns``.
    static func record(from row: SQLiteStatement, in db: SQLiteConnection) throws -> AuditRecord {
        guard let action = AuditAction(rawValue: row.text(2)) else {
            throw StoreError.corrupt(
                path: db.path, message: "audit event \(row.int64(0)) has action \"\(row.text(2))\"")
        }
        return AuditRecord(
            seq: UInt64(bitPattern: row.int64(0)), atMS: row.int64(1), action: action, keyID: row.text(3),
            keyName: row.text(4), actor: row.text(5), detail: row.text(6),
            denial: row.optionalInt64(7).flatMap { Denial(rawValue: Int($0)) },
            permissions: StoredColumns.decodePermissions(row.text(8)), resource: row.text(9),
            clientAddress: row.text(10))
    }

    /// The highest seq recorded (0 when there is none), and the time of the last api.request batch.
    static func last(in db: SQLiteConnection) throws -> (seq: UInt64, batchAtMS: Int64) {
        let max = try db.statement("SELECT coalesce(max(seq), 0) FROM audit_events").firstRow { $0.int64(0) }
        let batch = try APIRequestBatchTable.lastEvent(in: db)
        return (Swift.max(UInt64(bitPattern: max ?? 0), batch.seq), batch.atMS)
    }
}
