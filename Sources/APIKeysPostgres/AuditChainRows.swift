import APIKeysCore
import APIKeysStore
import Logging
import PostgresNIO

/// SQL for the audit trail's hash chain (``AuditChain``) on PostgreSQL: `audit_links` and the one
/// row of `audit_chain` (head and anchor), shared by every replica. Appending locks that row
/// (`FOR UPDATE`), so the links of all replicas are ordered as their transactions commit; the
/// lock is taken by the transaction's last statements and held only to its commit.
enum AuditChainRows {
    /// Appends the links given as arrays and moves the head, in one statement.
    static let appendSQL = """
        WITH linked AS (
            INSERT INTO audit_links (position, first_seq, last_seq, at_ms, count, hash, history)
            SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bytea[],
                                 $9::boolean[]))
        UPDATE audit_chain SET head_position = $7, head_hash = $8
        """

    /// Stores `events` (one transaction's, any order) in links of at most `maxEvents` and
    /// `maxBytes` — the packable ones (``APIRequestPacking/packs(_:)``) as packed batches
    /// (``APIRequestBatchRows``), the others as rows of `audit_events` — then appends the links,
    /// last in the caller's transaction: at most four statements whatever the number of links.
    /// (`packing: false` is for tests that write the layout of earlier versions, every event a row.)
    static func append(
        _ events: [AuditRecord], maxEvents: Int = .max, maxBytes: Int = .max, packing: Bool = true,
        on connection: PostgresConnection, logger: Logger
    ) async throws {
        let prepared = Prepared(events, maxEvents: maxEvents, maxBytes: maxBytes, packing: packing)
        try await append(prepared, on: connection, logger: logger)
    }

    /// Events made ready to store: their links' digests and the packed batches, which take most
    /// of a write's time and need no database, so that a writer makes them before its
    /// transaction begins (and holds its keys' rows and the chain's for less).
    struct Prepared: Sendable {
        fileprivate var links: [AuditChain.PendingLink] = []
        fileprivate var history: [Bool] = []
        fileprivate var rows: [AuditRecord] = []
        fileprivate var rowLinks: [Int64] = []
        fileprivate var batches = APIRequestBatchRows.Batches()

        /// The lowest seq of the events (their first link's first), nil when there are none.
        var firstSeq: UInt64? { links.first?.firstSeq }

        init(
            _ events: [AuditRecord], maxEvents: Int = .max, maxBytes: Int = .max, packing: Bool = true
        ) {
            guard !events.isEmpty else { return }
            // The writer's batches come in seq order: sorting them would copy every record.
            let inOrder = events.indices.dropFirst().allSatisfy { events[$0 - 1].seq < events[$0].seq }
            let sorted = inOrder ? events : events.sorted { $0.seq < $1.seq }
            links = AuditChain.pendingLinks(sorted, maxEvents: maxEvents, maxBytes: maxBytes)
            for link in links {
                let id = Int64(bitPattern: link.firstSeq)
                history.append(link.holdsHistory)
                // The usual link, every event packable, is judged with each record read where it
                // lies (a closure given records would copy each).
                if packing && APIRequestPacking.allPack(sorted[link.range]) {
                    batches.append(sorted[link.range], link: id)
                    continue
                }
                let packs = packing ? APIRequestPacking.packs : { _ in false }
                batches.append(ArraySlice(sorted[link.range].filter(packs)), link: id)
                for event in sorted[link.range] where !packs(event) {
                    rows.append(event)
                    rowLinks.append(id)
                }
            }
        }
    }

    /// Stores what `prepared` holds and appends its links, in the caller's transaction.
    static func append(_ prepared: Prepared, on connection: PostgresConnection, logger: Logger) async throws {
        let links = prepared.links
        guard !links.isEmpty else { return }
        if !prepared.rows.isEmpty {
            _ = try await connection.execute(
                AuditRows.InsertEvents(events: prepared.rows, links: prepared.rowLinks), logger: logger)
        }
        if !prepared.batches.isEmpty {
            _ = try await connection.execute(APIRequestBatchRows.Insert(batches: prepared.batches), logger: logger)
        }

        var head = try await state(on: connection, lock: true, logger: logger).head
        var positions: [Int64] = []
        var hashes: [ByteBuffer] = []
        for link in links {
            head = AuditChain.Point(
                position: head.position + 1, hash: AuditChain.linkHash(previous: head.hash, digest: link.digest))
            positions.append(Int64(head.position))
            hashes.append(ByteBuffer(bytes: head.hash))
        }
        var binds = PostgresBindings()
        binds.append(positions)
        binds.append(links.map { Int64(bitPattern: $0.firstSeq) })
        binds.append(links.map { Int64(bitPattern: $0.lastSeq) })
        binds.append(links.map(\.atMS))
        binds.append(links.map { Int64($0.count) })
        binds.append(hashes)
        binds.append(Int64(head.position))
        binds.append(ByteBuffer(bytes: head.hash))
        binds.append(prepared.history)
        try await connection.query(PostgresQuery(unsafeSQL: appendSQL, binds: binds), logger: logger)
    }

    /// Whether the event numbered `seq` is stored: a batch retried after a commit whose answer
    /// was lost is found written.
    static func isStored(seq: UInt64, on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        let seq = Int64(bitPattern: seq)
        let rows = try await connection.query(
            """
            SELECT EXISTS (SELECT 1 FROM audit_events WHERE seq = \(seq))
                   OR EXISTS (SELECT 1 FROM api_request_batches WHERE first_seq = \(seq))
            """, logger: logger)
        for try await stored in rows.decode(Bool.self) { return stored }
        return false
    }

    static func state(on connection: PostgresConnection, lock: Bool = false, logger: Logger) async throws
        -> AuditChain.State
    {
        let sql =
            "SELECT head_position, head_hash, anchor_position, anchor_hash FROM audit_chain"
            + (lock ? " FOR UPDATE" : "")
        for try await (head, headHash, anchor, anchorHash) in try await connection.query(
            PostgresQuery(unsafeSQL: sql), logger: logger
        ).decode((Int64, ByteBuffer, Int64, ByteBuffer).self) {
            return AuditChain.State(
                anchor: AuditChain.Point(position: UInt64(anchor), hash: Array(buffer: anchorHash)),
                head: AuditChain.Point(position: UInt64(head), hash: Array(buffer: headHash)))
        }
        throw StoreError.database(server: "", message: "the audit chain's head is missing")
    }

    static func links(after position: UInt64, limit: Int, on connection: PostgresConnection, logger: Logger)
        async throws -> [StoredLink]
    {
        try await linksWithKind(
            "WHERE position > \(Int64(position)) ORDER BY position LIMIT \(Int64(limit))", on: connection,
            logger: logger
        ).map(\.link)
    }

    /// The links `where` selects (its SQL text, no user values), with whether each holds history.
    private static func linksWithKind(_ clause: String, on connection: PostgresConnection, logger: Logger)
        async throws -> [(link: StoredLink, history: Bool)]
    {
        var links: [(StoredLink, Bool)] = []
        for try await (position, first, last, atMS, count, hash, prunedFrom, history) in try await connection.query(
            PostgresQuery(
                unsafeSQL:
                    "SELECT position, first_seq, last_seq, at_ms, count, hash, pruned_from, history FROM audit_links "
                    + clause), logger: logger
        ).decode((Int64, Int64, Int64, Int64, Int64, ByteBuffer, Int64?, Bool).self) {
            links.append(
                (
                    StoredLink(
                        position: UInt64(position), firstSeq: first, lastSeq: last, atMS: atMS, count: count,
                        hash: Array(buffer: hash), prunedFrom: prunedFrom.map { UInt64($0) }), history
                ))
        }
        return links
    }

    /// Most events one export page reads (links are whole; at least one is read).
    static let maxEventsPerPage = 8192

    /// A page of the chain (``KeyStore/auditChainPage(after:sinceMS:maxLinks:maxBytes:)``), in one
    /// REPEATABLE READ snapshot.
    static func page(
        after position: UInt64, sinceMS: Int64?, maxLinks: Int, maxBytes: Int, on connection: PostgresConnection,
        logger: Logger
    ) async throws -> AuditChain.Page {
        try await connection.withTransaction(logger: logger) { connection in
            try await connection.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", logger: logger)
            let state = try await state(on: connection, logger: logger)
            var start = position
            if position == 0, let sinceMS {
                let first = try await connection.query(
                    "SELECT position FROM audit_links WHERE at_ms >= \(sinceMS) ORDER BY position LIMIT 1",
                    logger: logger
                ).decode(Int64.self).first { _ in true }
                start = first.map { UInt64($0) - 1 } ?? state.head.position
            }
            var previous: [UInt8]? = start == state.anchor.position ? state.anchor.hash : nil
            if previous == nil, start > 0 {
                previous = try await connection.query(
                    "SELECT hash FROM audit_links WHERE position = \(Int64(start))", logger: logger
                ).decode(ByteBuffer.self).first { _ in true }.map { Array(buffer: $0) }
            }
            var stored: [StoredLink] = []
            var planned = 0
            for link in try await links(after: start, limit: maxLinks, on: connection, logger: logger) {
                if !stored.isEmpty && planned + Int(link.count) > maxEventsPerPage { break }
                planned += Int(link.count)
                stored.append(link)
            }
            guard let low = stored.map(\.firstSeq).min(), let high = stored.map(\.lastSeq).max() else {
                return AuditChain.Page(state: state, links: [])
            }
            var byLink: [Int64: [AuditRecord]] = [:]
            let kept = stored.filter { $0.prunedFrom == nil }.map(\.firstSeq)
            for (event, link) in try await AuditRows.events(
                seqs: low...high, links: kept, on: connection, logger: logger)
                + APIRequestBatchRows.events(seqs: low...high, links: kept, on: connection, logger: logger)
            {
                byLink[link, default: []].append(event)
            }
            return AuditChain.Page(
                state: state, after: start, startHash: previous, maxBytes: maxBytes,
                links: stored.map(\.point), prunedFrom: { stored[$0].prunedFrom }
            ) { (byLink[stored[$0].firstSeq] ?? []).sorted { $0.seq < $1.seq } }
        }
    }

    /// One step of pruning (``AuditRetention``): under the chain's row lock (so replicas prune
    /// one at a time), the oldest links past `cutoffs` (history kept stops them), at most 256
    /// and 10,000 events, and their events; the anchor moves to the last one. When none goes
    /// whole, traffic links past the traffic cutoff are emptied into gaps instead (at most 4,096).
    /// Then rows from before the chain, by time.
    static func pruneStep(_ cutoffs: AuditRetention.Cutoffs, on connection: PostgresConnection, logger: Logger)
        async throws -> AuditRetention.Pruned
    {
        let state = try await state(on: connection, lock: true, logger: logger)
        var expired: [StoredLink] = []
        var events = 0
        for (link, history) in try await linksWithKind(
            "WHERE position > \(Int64(state.anchor.position)) ORDER BY position LIMIT 256", on: connection,
            logger: logger)
        {
            guard cutoffs.expires(atMS: link.atMS, history: history),
                expired.isEmpty || events + Int(link.count) <= 10_000
            else { break }
            events += Int(link.count)
            expired.append(link)
        }
        var pruned = AuditRetention.Pruned()
        if let last = expired.last {
            pruned.rows += try await deleteEvents(of: expired, on: connection, logger: logger)
            try await connection.query(
                "DELETE FROM audit_links WHERE position <= \(Int64(last.position))", logger: logger)
            try await connection.query(
                """
                UPDATE audit_chain SET anchor_position = \(Int64(last.position)), anchor_hash = \(ByteBuffer(bytes: last.hash))
                """, logger: logger)
            pruned.links = expired.count
            pruned.anchor = AuditChain.Point(position: last.position, hash: last.hash)
        } else {
            pruned = try await makeGaps(
                olderThan: AuditRetention.gapCutoff(cutoffs.trafficMS), on: connection, logger: logger)
        }
        let legacy = try await connection.query(
            """
            DELETE FROM audit_events WHERE seq IN (
                SELECT seq FROM audit_events WHERE at_ms < \(cutoffs.trafficMS) AND link IS NULL
                AND (action IN ('api.request', 'admin.permission_denied') OR at_ms < \(cutoffs.historyMS ?? .min))
                ORDER BY at_ms LIMIT 10000)
            RETURNING 1
            """, logger: logger)
        for try await _ in legacy.decode(Int32.self) { pruned.rows += 1 }
        return pruned
    }

    /// Empties up to 4,096 traffic links older than `cutoffMS` into gaps (``AuditChain/Link/prunedFrom``):
    /// their events go, and each run of them becomes one row, its last link's, that names the run's
    /// first position; a run that continues an earlier gap takes it in.
    private static func makeGaps(olderThan cutoffMS: Int64, on connection: PostgresConnection, logger: Logger)
        async throws -> AuditRetention.Pruned
    {
        let expired = try await linksWithKind(
            "WHERE NOT history AND pruned_from IS NULL AND at_ms < \(cutoffMS) ORDER BY at_ms, position LIMIT 4096",
            on: connection, logger: logger
        ).map(\.link).sorted { $0.position < $1.position }
        var pruned = AuditRetention.Pruned()
        guard !expired.isEmpty else { return pruned }
        pruned.rows = try await deleteEvents(of: expired, on: connection, logger: logger)
        // Runs of consecutive positions, each continuing the gap just before it when there is one.
        let positions = expired.map(\.position)
        let runs = AuditRetention.ranges(positions)
        let before = runs.map { Int64($0.lowerBound) - 1 }
        var earlier: [Int64: Int64] = [:]
        for try await (position, from) in try await connection.query(
            "SELECT position, pruned_from FROM audit_links WHERE position = ANY(\(before)::bigint[]) AND pruned_from IS NOT NULL",
            logger: logger
        ).decode((Int64, Int64).self) {
            earlier[position] = from
        }
        let lasts = runs.map { Int64($0.upperBound) }
        let froms = runs.map { earlier[Int64($0.lowerBound) - 1] ?? Int64($0.lowerBound) }
        let dropped = positions.map { Int64($0) }.filter { !lasts.contains($0) } + Array(earlier.keys)
        try await connection.query(
            "DELETE FROM audit_links WHERE position = ANY(\(dropped)::bigint[])", logger: logger)
        try await connection.query(
            """
            UPDATE audit_links SET pruned_from = g.f, count = 0
            FROM unnest(\(lasts)::bigint[], \(froms)::bigint[]) AS g(p, f) WHERE position = g.p
            """, logger: logger)
        pruned.gaps = runs
        return pruned
    }

    /// Deletes the events of `links`, rows and batches; returns how many.
    private static func deleteEvents(of links: [StoredLink], on connection: PostgresConnection, logger: Logger)
        async throws -> Int
    {
        let batched = try await APIRequestBatchRows.delete(of: links, on: connection, logger: logger)
        let rows = try await connection.query(
            """
            DELETE FROM audit_events e USING unnest(\(links.map(\.firstSeq))::bigint[], \(links.map(\.lastSeq))::bigint[]) AS l(f, t)
            WHERE e.seq BETWEEN l.f AND l.t AND e.link = l.f RETURNING 1
            """, logger: logger)
        var count = batched
        for try await _ in rows.decode(Int32.self) { count += 1 }
        return count
    }
}
