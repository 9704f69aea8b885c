import APIKeysCore
import APIKeysStore

/// SQL for the audit trail's hash chain (``AuditChain``) on SQLite: `audit_links`, one row per
/// link, and `audit_chain`, its one row holding the head and the anchor. Every transaction that
/// stores audit events (both connections') appends its links here; SQLite's write lock orders
/// them, so positions follow commit order.
enum AuditChainTable {
    static func state(in db: SQLiteConnection) throws -> AuditChain.State {
        let state = try db.statement(
            "SELECT head_position, head_hash, anchor_position, anchor_hash FROM audit_chain WHERE one = 1"
        ).firstRow { row in
            AuditChain.State(
                anchor: AuditChain.Point(position: UInt64(row.int64(2)), hash: row.blob(3)),
                head: AuditChain.Point(position: UInt64(row.int64(0)), hash: row.blob(1)))
        }
        guard let state else { throw StoreError.corrupt(path: db.path, message: "the audit chain's head is missing") }
        return state
    }

    /// Stores `events` (sorted by seq) as links of at most `maxEvents` and `maxBytes`, in the caller's
    /// transaction: `store` writes each link's events, marked with the link id it is given (the
    /// link's first seq); then the link rows and the new head are written.
    static func append(
        _ events: [AuditRecord], maxEvents: Int = .max, maxBytes: Int = .max, in db: SQLiteConnection,
        store: (ArraySlice<AuditRecord>, Int64) throws -> Void
    ) throws {
        guard !events.isEmpty else { return }
        var head = try state(in: db).head
        let insert = try db.statement(
            """
            INSERT INTO audit_links (position, first_seq, last_seq, at_ms, count, hash, history)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            """)
        for link in AuditChain.pendingLinks(events, maxEvents: maxEvents, maxBytes: maxBytes) {
            let id = Int64(bitPattern: link.firstSeq)
            try store(events[link.range], id)
            head = AuditChain.Point(
                position: head.position + 1, hash: AuditChain.linkHash(previous: head.hash, digest: link.digest))
            insert.reset()
            try insert.bind(
                .integer(Int64(head.position)), .integer(id), .integer(Int64(bitPattern: link.lastSeq)),
                .integer(link.atMS), .integer(Int64(link.count)), .blob(head.hash),
                .integer(link.holdsHistory ? 1 : 0)
            ).run()
        }
        try db.statement("UPDATE audit_chain SET head_position = ?, head_hash = ? WHERE one = 1")
            .bind(.integer(Int64(head.position)), .blob(head.hash)).run()
    }

    /// Stores `events` (sorted by seq) as rows of `audit_events`, in one link.
    static func appendRows(_ events: [AuditRecord], in db: SQLiteConnection) throws {
        let insert = try AuditTable.insertStatement(in: db)
        try append(events, in: db) { link, id in
            for event in link { try AuditTable.insert(event, link: id, using: insert) }
        }
    }

    static let linkColumns = "position, first_seq, last_seq, at_ms, count, hash, pruned_from, history"

    /// Up to `limit` links after `position`, in order.
    static func links(after position: UInt64, limit: Int, in db: SQLiteConnection) throws -> [StoredLink] {
        try db.statement(
            "SELECT \(linkColumns) FROM audit_links WHERE position > ? ORDER BY position LIMIT ?"
        ).bind(.integer(Int64(position)), .integer(Int64(limit))).rows(link(from:))
    }

    private static func link(from row: SQLiteStatement) -> StoredLink {
        StoredLink(
            position: UInt64(row.int64(0)), firstSeq: row.int64(1), lastSeq: row.int64(2), atMS: row.int64(3),
            count: row.int64(4), hash: row.blob(5), prunedFrom: row.optionalInt64(6).map { UInt64($0) })
    }

    /// The events of `link`, in seq order: its rows of `audit_events` and its api.request batches.
    static func events(of link: StoredLink, in db: SQLiteConnection) throws -> [AuditRecord] {
        guard link.prunedFrom == nil else { return [] }
        let bounds: [SQLiteValue] = [.integer(link.firstSeq), .integer(link.lastSeq), .integer(link.firstSeq)]
        var events = try db.statement(
            "SELECT \(AuditTable.columns) FROM audit_events WHERE seq BETWEEN ? AND ? AND link = ?"
        ).bind(bounds).rows { try AuditTable.record(from: $0, in: db) }
        try db.statement("SELECT events FROM api_request_batches WHERE first_seq BETWEEN ? AND ? AND link = ?")
            .bind(bounds).scan { row in
                // A batch that no longer decodes was tampered with: left out, its link does not
                // hash, and verification names the link instead of failing on the batch.
                if let batch = try? APIRequestBatchTable.unpack(row, column: 0, in: db) { events += batch }
                return true
            }
        return events.sorted { $0.seq < $1.seq }
    }

    /// A page of the chain after `position` (or, when it is 0 and `sinceMS` is given, from the
    /// first link with an event at or after then): whole links, up to `maxLinks` and about
    /// `maxBytes` of events (at least one link), read in one snapshot.
    static func page(after position: UInt64, sinceMS: Int64?, maxLinks: Int, maxBytes: Int, in db: SQLiteConnection)
        throws -> AuditChain.Page
    {
        try db.readTransaction {
            let state = try state(in: db)
            var start = position
            if position == 0, let sinceMS {
                let first = try db.statement(
                    "SELECT position FROM audit_links WHERE at_ms >= ? ORDER BY position LIMIT 1"
                ).bind(.integer(sinceMS)).firstRow { UInt64($0.int64(0)) }
                start = first.map { $0 - 1 } ?? state.head.position
            }
            var previous: [UInt8]? = start == state.anchor.position ? state.anchor.hash : nil
            if previous == nil, start > 0 {
                previous = try db.statement("SELECT hash FROM audit_links WHERE position = ?")
                    .bind(.integer(Int64(start))).firstRow { $0.blob(0) }
            }
            let stored = try Self.links(after: start, limit: maxLinks, in: db)
            return try AuditChain.Page(
                state: state, after: start, startHash: previous, maxBytes: maxBytes,
                links: stored.map(\.point), prunedFrom: { stored[$0].prunedFrom }
            ) { try Self.events(of: stored[$0], in: db) }
        }
    }

    /// What pruning removed of the chain in one step.
    struct Pruned {
        var links = 0
        var batches = 0
        var batchedEvents = 0
        var rows = 0
        var anchor: AuditChain.Point?
        var gaps: [ClosedRange<UInt64>] = []
    }

    /// Removes the oldest links past `cutoffs` (at most `maxLinks`, stopping at the first that is
    /// not: history kept stops it), their events, and moves the anchor to the last one.
    static func pruneStep(_ cutoffs: AuditRetention.Cutoffs, maxLinks: Int, in db: SQLiteConnection) throws -> Pruned {
        var pruned = Pruned()
        let expired = try db.statement(
            "SELECT \(linkColumns) FROM audit_links WHERE position > ? ORDER BY position LIMIT ?"
        ).bind(.integer(Int64(try state(in: db).anchor.position)), .integer(Int64(maxLinks))).rows { row in
            (link(from: row), row.int64(7) != 0)
        }.prefix { link, history in cutoffs.expires(atMS: link.atMS, history: history) }.map(\.0)
        guard let last = expired.last else { return pruned }
        for link in expired { try deleteEvents(of: link, counting: &pruned, in: db) }
        try db.statement("DELETE FROM audit_links WHERE position <= ?").bind(.integer(Int64(last.position))).run()
        let anchor = AuditChain.Point(position: last.position, hash: last.hash)
        try db.statement("UPDATE audit_chain SET anchor_position = ?, anchor_hash = ? WHERE one = 1")
            .bind(.integer(Int64(anchor.position)), .blob(anchor.hash)).run()
        pruned.links = expired.count
        pruned.anchor = anchor
        return pruned
    }

    /// Empties up to `maxLinks` traffic links past the traffic cutoff that history before them
    /// keeps from being removed whole: their events go, and each run of such links becomes one
    /// gap row (the run's last position and hash, `pruned_from` its first).
    static func makeGaps(olderThan cutoffMS: Int64, maxLinks: Int, in db: SQLiteConnection) throws -> Pruned {
        var pruned = Pruned()
        let expired = try db.statement(
            """
            SELECT \(linkColumns) FROM audit_links INDEXED BY audit_links_traffic
            WHERE history = 0 AND pruned_from IS NULL AND at_ms < ? ORDER BY at_ms, position LIMIT ?
            """
        ).bind(.integer(cutoffMS), .integer(Int64(maxLinks))).rows(link(from:)).sorted { $0.position < $1.position }
        let previousGap = try db.statement(
            "SELECT pruned_from FROM audit_links WHERE position = ? AND pruned_from IS NOT NULL")
        let dropRow = try db.statement("DELETE FROM audit_links WHERE position = ?")
        let markGap = try db.statement("UPDATE audit_links SET pruned_from = ?, count = 0 WHERE position = ?")
        for link in expired {
            try deleteEvents(of: link, counting: &pruned, in: db)
            previousGap.reset()
            var from = link.position
            if let earlier = try previousGap.bind(.integer(Int64(link.position) - 1)).firstRow({ $0.int64(0) }) {
                from = UInt64(earlier)
                dropRow.reset()
                try dropRow.bind(.integer(Int64(link.position) - 1)).run()
            }
            markGap.reset()
            try markGap.bind(.integer(Int64(from)), .integer(Int64(link.position))).run()
        }
        pruned.gaps = AuditRetention.ranges(expired.map(\.position))
        return pruned
    }

    /// Deletes the events of `link` (its rows and batches, with the batches' key index).
    private static func deleteEvents(of link: StoredLink, counting pruned: inout Pruned, in db: SQLiteConnection)
        throws
    {
        let bounds: [SQLiteValue] = [.integer(link.firstSeq), .integer(link.lastSeq)]
        try db.statement(
            """
            DELETE FROM api_request_batch_keys WHERE first_seq IN (
                SELECT first_seq FROM api_request_batches WHERE first_seq BETWEEN ?1 AND ?2 AND link = ?1)
            """
        ).bind(bounds).run()
        let counts = try db.statement(
            "DELETE FROM api_request_batches WHERE first_seq BETWEEN ?1 AND ?2 AND link = ?1 RETURNING count"
        ).bind(bounds).rows { $0.int64(0) }
        pruned.batches += counts.count
        pruned.batchedEvents += Int(counts.reduce(0, +))
        try db.statement("DELETE FROM audit_events WHERE seq BETWEEN ?1 AND ?2 AND link = ?1").bind(bounds).run()
        pruned.rows += db.changes
    }
}
