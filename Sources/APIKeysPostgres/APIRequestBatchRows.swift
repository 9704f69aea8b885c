import APIKeysCore
import APIKeysStore
import Logging
import PostgresNIO

/// SQL for `api.request` events on PostgreSQL (migration 12): packed batches (``APIRequestPacking``,
/// the layout SQLite stores) in `api_request_batches`, and `api_request_batch_keys`, one entry per
/// distinct key of a batch, which a key's page reads instead of unpacking every batch.
///
/// Unlike SQLite's, the batches of several replicas overlap: each replica's cover disjoint,
/// increasing seq ranges, but seqs of all replicas interleave (``AuditSequence/Scheme/clock(replica:)``).
/// No batch spans more than ``maxSeqSpan``, so a reader knows how far before a batch another one
/// holding later events can start.
enum APIRequestBatchRows {
    /// The widest seq range of one batch: one second of ``AuditSequence`` numbers. A writer's
    /// drain covers milliseconds; a longer one (a write retried after an outage) becomes several.
    static let maxSeqSpan: UInt64 = 1000 << 20

    /// Batches read per query while a page is filled.
    static let batchesPerRead = 16

    /// The batch rows and their keys' entries, as one statement, prepared once per connection.
    struct Insert: PostgresPreparedStatement {
        static let statement = NamedStatement(
            """
            WITH k AS (SELECT * FROM unnest({key_id}::text[], {key_first_seq}::bigint[]) AS k(key_id, first_seq)),
            stored_keys AS (INSERT INTO api_request_batch_keys (key_id, first_seq) SELECT key_id, first_seq FROM k),
            grouped AS (SELECT first_seq, array_agg(key_id) AS key_ids FROM k GROUP BY first_seq)
            INSERT INTO api_request_batches (first_seq, last_seq, first_at_ms, last_at_ms, count, link, key_ids, events)
            SELECT b.first_seq, b.last_seq, b.first_at_ms, b.last_at_ms, b.count, b.link,
                   coalesce(grouped.key_ids, '{}'), b.events
            FROM unnest({first_seq}::bigint[], {last_seq}::bigint[], {first_at_ms}::bigint[], {last_at_ms}::bigint[],
                        {count}::integer[], {link}::bigint[], {events}::bytea[])
                 AS b(first_seq, last_seq, first_at_ms, last_at_ms, count, link, events)
            LEFT JOIN grouped USING (first_seq)
            """)
        static let sql = statement.sql
        typealias Row = ()
        let batches: Batches

        func makeBindings() throws -> PostgresBindings {
            var values = NamedValues()
            values.set("key_id", batches.keyIDs)
            values.set("key_first_seq", batches.keyFirstSeqs)
            values.set("first_seq", batches.firstSeqs)
            values.set("last_seq", batches.lastSeqs)
            values.set("first_at_ms", batches.firstAtMS)
            values.set("last_at_ms", batches.lastAtMS)
            values.set("count", batches.counts)
            values.set("link", batches.links)
            values.set("events", batches.events)
            return try Self.statement.bindings(values)
        }

        func decodeRow(_ row: PostgresRow) throws -> Row {}
    }

    /// Batches to insert, as the columns ``Insert`` binds.
    struct Batches {
        var firstSeqs: [Int64] = []
        var lastSeqs: [Int64] = []
        var firstAtMS: [Int64] = []
        var lastAtMS: [Int64] = []
        var counts: [Int32] = []
        var links: [Int64] = []
        var events: [ByteBuffer] = []
        var keyIDs: [String] = []
        var keyFirstSeqs: [Int64] = []

        var isEmpty: Bool { firstSeqs.isEmpty }

        /// Adds `events` (packable, in increasing seq order) of the chain's link `link`, as batches
        /// of at most ``APIRequestPacking/maxEventsPerRow`` events and ``maxSeqSpan``.
        mutating func append(_ events: ArraySlice<AuditRecord>, link: Int64) {
            for range in APIRequestPacking.rows(events, maxSeqSpan: maxSeqSpan) {
                let rows = events[range]
                guard let first = rows.first, let last = rows.last else { continue }
                let firstSeq = Int64(bitPattern: first.seq)
                firstSeqs.append(firstSeq)
                lastSeqs.append(Int64(bitPattern: last.seq))
                firstAtMS.append(first.atMS)
                lastAtMS.append(last.atMS)
                counts.append(Int32(rows.count))
                links.append(link)
                self.events.append(ByteBuffer(bytes: APIRequestPacking.pack(rows)))
                for key in APIRequestPacking.keyIDs(of: rows) {
                    keyIDs.append(key)
                    keyFirstSeqs.append(firstSeq)
                }
            }
        }
    }

    /// Up to `limit` events matching `query` (action nil or api.request) with seq below
    /// `beforeSeq`, newest first.
    ///
    /// Batches are read newest first (by first seq) until `limit` events are found; then the
    /// batches that start before the oldest one read but end after the `limit`-th event found
    /// (another replica's, overlapping) are read too. They start at most ``maxSeqSpan`` before it.
    static func page(
        _ query: AuditQuery, beforeSeq: Int64, limit: Int, on connection: PostgresConnection, logger: Logger
    ) async throws -> [AuditRecord] {
        guard query.action == nil || query.action == .apiRequest, limit > 0 else { return [] }
        var found: [AuditRecord] = []
        var oldestRead = beforeSeq
        while found.count < limit {
            let batches = try await read(
                query, startingBelow: oldestRead, limit: batchesPerRead, on: connection, logger: logger)
            for (firstSeq, events) in batches {
                oldestRead = firstSeq
                found += events.filter { matches($0, query, beforeSeq: beforeSeq) }
            }
            if batches.count < batchesPerRead { break }
        }
        guard found.count >= limit else { return found.sorted { $0.seq > $1.seq } }
        found.sort { $0.seq > $1.seq }
        let threshold = Int64(bitPattern: found[limit - 1].seq)
        let overlapping = try await read(
            query, startingBelow: oldestRead, endingAfter: threshold,
            startingFrom: threshold - Int64(maxSeqSpan), on: connection, logger: logger)
        for (_, events) in overlapping { found += events.filter { matches($0, query, beforeSeq: beforeSeq) } }
        return Array(found.sorted { $0.seq > $1.seq }.prefix(limit))
    }

    private static func matches(_ event: AuditRecord, _ query: AuditQuery, beforeSeq: Int64) -> Bool {
        Int64(bitPattern: event.seq) < beforeSeq && query.admits(event)
    }

    /// The batches that may hold events matching `query`, starting below `below` (and at or
    /// after `from`, ending after `after`, when given), newest first, each with its events.
    private static func read(
        _ query: AuditQuery, startingBelow below: Int64, endingAfter after: Int64? = nil,
        startingFrom from: Int64? = nil,
        limit: Int? = nil, on connection: PostgresConnection, logger: Logger
    ) async throws -> [(firstSeq: Int64, events: [AuditRecord])] {
        var conditions = NamedConditions()
        var source = "api_request_batches b"
        var seqColumn = "b.first_seq"
        if let keyID = query.keyID {
            // The key's entries in order of first seq: the primary key (key_id, first_seq).
            source = "api_request_batch_keys k JOIN api_request_batches b ON b.first_seq = k.first_seq"
            seqColumn = "k.first_seq"
            conditions.add("k.key_id = {key_id}", "key_id", keyID)
        }
        conditions.add("\(seqColumn) < {below}", "below", below)
        conditions.add("b.last_seq > {after}", "after", after)
        conditions.add("\(seqColumn) >= {from}", "from", from)
        conditions.add("b.last_at_ms >= {since}", "since", query.sinceMS)
        conditions.add("b.first_at_ms < {until}", "until", query.untilMS)
        var sql = """
            SELECT b.first_seq, b.events FROM \(source) WHERE \(conditions.sql) ORDER BY \(seqColumn) DESC
            """
        if let limit {
            sql += " LIMIT {limit}"
            conditions.set("limit", Int64(limit))
        }
        var batches: [(Int64, [AuditRecord])] = []
        for try await (firstSeq, events) in try await connection.query(
            NamedStatement(sql).query(conditions.values), logger: logger
        ).decode((Int64, ByteBuffer).self) {
            batches.append((firstSeq, try unpack(events, firstSeq: firstSeq)))
        }
        return batches
    }

    /// The events of the batches stored in one of `links` with a first seq in `seqs`, each with
    /// its link (a page of the hash chain).
    static func events(seqs: ClosedRange<Int64>, links: [Int64], on connection: PostgresConnection, logger: Logger)
        async throws -> [(AuditRecord, Int64)]
    {
        var events: [(AuditRecord, Int64)] = []
        for try await (firstSeq, link, packed) in try await connection.query(
            """
            SELECT first_seq, link, events FROM api_request_batches
            WHERE first_seq BETWEEN \(seqs.lowerBound) AND \(seqs.upperBound) AND link = ANY(\(links)::bigint[])
            """, logger: logger
        ).decode((Int64, Int64, ByteBuffer).self) {
            for event in try unpack(packed, firstSeq: firstSeq) { events.append((event, link)) }
        }
        return events
    }

    /// Deletes the batches of `links` and their keys' entries; returns how many events they held.
    static func delete(of links: [StoredLink], on connection: PostgresConnection, logger: Logger) async throws -> Int {
        let rows = try await connection.query(
            """
            WITH gone AS (
                DELETE FROM api_request_batches b
                USING unnest(\(links.map(\.firstSeq))::bigint[], \(links.map(\.lastSeq))::bigint[]) AS l(f, t)
                WHERE b.first_seq BETWEEN l.f AND l.t AND b.link = l.f
                RETURNING b.first_seq, b.count, b.key_ids),
            gone_keys AS (
                DELETE FROM api_request_batch_keys k
                USING (SELECT unnest(key_ids) AS key_id, first_seq FROM gone) g
                WHERE k.key_id = g.key_id AND k.first_seq = g.first_seq)
            SELECT coalesce(sum(count), 0)::bigint FROM gone
            """, logger: logger)
        for try await count in rows.decode(Int64.self) { return Int(count) }
        return 0
    }

    private static func unpack(_ buffer: ByteBuffer, firstSeq: Int64) throws -> [AuditRecord] {
        do {
            return try buffer.withUnsafeReadableBytes { bytes in try APIRequestPacking.unpack(bytes) }
        } catch {
            throw StoreError.database(server: "", message: "the api.request batch at seq \(firstSeq) is \(error)")
        }
    }
}
