import APIKeysCore
import APIKeysStore

/// SQL for `api.request` events, stored as batches: one row per batch the audit writer commits.
///
/// Writing one row (and its index entries) per check costs ~2.7 µs of B-tree work and was the
/// limit of the whole server; a batch is one row, one index entry per distinct key, and a blob
/// of the events packed by ``APIRequestPacking``. The writer assigns seqs and times in queue
/// order, so batches cover disjoint, increasing seq ranges and times never decrease from one
/// event to the next; queries rely on both to read only the batches a page needs.
enum APIRequestBatchTable {
    /// Stores `events` (api.request, in increasing seq order) as one or more batch rows of the
    /// chain's link `link`.
    static func insert(_ events: ArraySlice<AuditRecord>, link: Int64, in db: SQLiteConnection) throws {
        let insertBatch = try db.statement(
            """
            INSERT INTO api_request_batches (first_seq, last_seq, first_at_ms, last_at_ms, count, events, link)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            """)
        let insertKey = try db.statement(
            "INSERT OR IGNORE INTO api_request_batch_keys (key_id, first_seq) VALUES (?, ?)")
        for range in APIRequestPacking.rows(events) {
            let rows = events[range]
            guard let first = rows.first, let last = rows.last else { continue }
            insertBatch.reset()
            try insertBatch.bind(
                .integer(Int64(bitPattern: first.seq)), .integer(Int64(bitPattern: last.seq)), .integer(first.atMS),
                .integer(last.atMS), .integer(Int64(rows.count)), .blob(APIRequestPacking.pack(rows)), .integer(link)
            ).run()
            for key in APIRequestPacking.keyIDs(of: rows) {
                insertKey.reset()
                try insertKey.bind(.text(key), .integer(Int64(bitPattern: first.seq))).run()
            }
        }
    }

    /// Up to `limit` events matching `query` (action nil or api.request) with seq below
    /// `beforeSeq`, newest first.
    static func page(_ query: AuditQuery, beforeSeq: Int64, limit: Int, in db: SQLiteConnection) throws
        -> [AuditRecord]
    {
        // The batches to read: first_seq in [low, high]. Times never decrease with seq, so the
        // batches that can hold an event before `untilMS` end with the last one starting before
        // it, and those that can hold one at or after `sinceMS` begin with the last one starting
        // before it (every earlier batch ended before that one started).
        var low: Int64 = 0
        var high = beforeSeq - 1
        if let until = query.untilMS {
            guard let bound = try lastBatchStarting(before: until, in: db) else { return [] }
            high = min(high, bound)
        }
        if let since = query.sinceMS, let bound = try lastBatchStarting(before: since, in: db) { low = bound }
        guard low <= high else { return [] }

        let statement: SQLiteStatement
        if let keyID = query.keyID {
            statement = try db.statement(
                """
                SELECT b.events FROM api_request_batch_keys k JOIN api_request_batches b ON b.first_seq = k.first_seq
                WHERE k.key_id = ? AND k.first_seq BETWEEN ? AND ? ORDER BY k.first_seq DESC
                """)
            try statement.bind(.text(keyID), .integer(low), .integer(high))
        } else {
            statement = try db.statement(
                "SELECT events FROM api_request_batches WHERE first_seq BETWEEN ? AND ? ORDER BY first_seq DESC")
            try statement.bind(.integer(low), .integer(high))
        }
        var found: [AuditRecord] = []
        try statement.scan { row in
            let events = try unpack(row, column: 0, in: db)
            for event in events.reversed() where Int64(bitPattern: event.seq) < beforeSeq && query.admits(event) {
                found.append(event)
                if found.count == limit { return false }
            }
            return true
        }
        return found
    }

    /// The events of the packed batch in `column` of `row`.
    static func unpack(_ row: SQLiteStatement, column: Int32, in db: SQLiteConnection) throws -> [AuditRecord] {
        do {
            return try row.withBlob(column) { bytes throws(APIRequestPacking.Malformed) in
                try APIRequestPacking.unpack(bytes)
            }
        } catch {
            throw StoreError.corrupt(path: db.path, message: "an api.request batch is \(error)")
        }
    }

    /// The seq and time of the last event stored in a batch, zeros when there is none.
    static func lastEvent(in db: SQLiteConnection) throws -> (seq: UInt64, atMS: Int64) {
        let last = try db.statement(
            "SELECT last_seq, last_at_ms FROM api_request_batches ORDER BY first_seq DESC LIMIT 1"
        ).firstRow { (UInt64(bitPattern: $0.int64(0)), $0.int64(1)) }
        return last ?? (0, 0)
    }

    /// The first seq of the newest batch that started before `atMS`.
    private static func lastBatchStarting(before atMS: Int64, in db: SQLiteConnection) throws -> Int64? {
        try db.statement(
            """
            SELECT first_seq FROM api_request_batches WHERE first_at_ms < ?
            ORDER BY first_at_ms DESC, first_seq DESC LIMIT 1
            """
        ).bind(.integer(atMS)).firstRow { $0.int64(0) }
    }
}
