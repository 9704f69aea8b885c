import APIKeysCore
import APIKeysStore
import Foundation
import Logging
import PostgresNIO

/// SQL for the `keys` table.
enum KeyRows {
    private static let columns = """
        pk, id, name, hint, permissions, enabled, created_at_ms, updated_at_ms, expires_at_ms, last_used_at_ms, \
        rotated_at_ms, secret_hash, allowed_networks, grace_secret_hash, grace_ends_at_ms, rate_limit, uses_granted, \
        uses_spent
        """

    private typealias Row = (
        Int64, String, String, String, String, Bool, Int64, Int64, Int64?, Int64?, Int64?, ByteBuffer, String,
        ByteBuffer?, Int64?, String, Int64?, Int64
    )

    private static func record(_ row: Row) throws -> (Int64, StoredKey) {
        guard let hash = SecretHash(bytea: row.11), row.13.map({ SecretHash(bytea: $0) != nil }) ?? true else {
            throw StoreError.database(server: "", message: "key \(row.1) has a secret hash of the wrong size")
        }
        let key = KeyRecord(
            id: row.1, name: row.2, hint: row.3, permissions: StoredColumns.decodePermissions(row.4), enabled: row.5,
            createdAtMS: row.6, updatedAtMS: row.7, expiresAtMS: row.8, lastUsedAtMS: row.9, rotatedAtMS: row.10,
            allowedNetworks: StoredColumns.decodeNetworks(row.12), graceEndsAtMS: row.14,
            rateLimit: StoredColumns.decodeRateLimit(row.15),
            usage: row.16.map { UsageGrant(granted: $0, spent: row.17) })
        return (row.0, StoredKey(key: key, hash: hash, graceHash: row.13.flatMap(SecretHash.init(bytea:))))
    }

    /// The key `id`, or nil.
    static func find(id: String, on connection: PostgresConnection, logger: Logger) async throws -> StoredKey? {
        let sql = "SELECT \(columns) FROM keys WHERE id = $1"
        var binds = PostgresBindings()
        binds.append(id)
        for try await row in try await connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger)
            .decode(Row.self)
        {
            return try record(row).1
        }
        return nil
    }

    static func page(after: Int64, limit: Int, on connection: PostgresConnection, logger: Logger) async throws
        -> [(Int64, KeyRecord)]
    {
        var binds = PostgresBindings()
        binds.append(after)
        binds.append(Int64(limit))
        var page: [(Int64, KeyRecord)] = []
        let sql = "SELECT \(columns) FROM keys WHERE pk > $1 ORDER BY pk LIMIT $2"
        for try await row in try await connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger)
            .decode(Row.self)
        {
            let (pk, stored) = try record(row)
            page.append((pk, stored.key))
        }
        return page
    }

    /// The keys `ids` that exist, each locked until the transaction ends. Rows are locked in id
    /// order, so that two replicas' batches (and the last-used update) never wait for each other in a cycle.
    static func lock(ids: [String], on connection: PostgresConnection, logger: Logger) async throws -> [String:
        StoredKey]
    {
        guard !ids.isEmpty else { return [:] }
        var binds = PostgresBindings()
        binds.append(ids)
        let sql = "SELECT \(columns) FROM keys WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
        var found: [String: StoredKey] = [:]
        for try await row in try await connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger)
            .decode(Row.self)
        {
            let stored = try record(row).1
            found[stored.key.id] = stored
        }
        return found
    }

    /// Raises last-used times and, for keys with usage credits, the credits spent (by key id);
    /// returns the spent counts now stored for keys with credits, other replicas' checks included.
    static func touch(_ uses: [String: KeyUse], on connection: PostgresConnection, logger: Logger) async throws
        -> [String: Int64]
    {
        guard !uses.isEmpty else { return [:] }
        let ids = uses.keys.sorted()
        let times = ids.map { uses[$0]!.lastAtMS }
        let allowed = ids.map { uses[$0]!.allowed }
        // In id order, as mutations lock them (``lock(ids:on:logger:)``): no deadlock with a batch.
        try await connection.query(
            "SELECT 1 FROM keys WHERE id = ANY(\(ids)::text[]) ORDER BY id FOR UPDATE", logger: logger)
        let rows = try await connection.query(
            """
            UPDATE keys SET last_used_at_ms = greatest(coalesce(last_used_at_ms, 0), u.at),
                            uses_spent = uses_spent + CASE WHEN uses_granted IS NULL THEN 0 ELSE u.n END
            FROM unnest(\(ids)::text[], \(times)::bigint[], \(allowed)::bigint[]) AS u(id, at, n) WHERE keys.id = u.id
            RETURNING keys.id, CASE WHEN keys.uses_granted IS NULL THEN -1 ELSE keys.uses_spent END
            """, logger: logger)
        var spent: [String: Int64] = [:]
        for try await (id, count) in rows.decode((String, Int64).self) where count >= 0 { spent[id] = count }
        return spent
    }
}

/// SQL for the change log, `key_changes`.
enum ChangeRows {
    /// One committed change, as a replica applies it to its index.
    struct Change: Sendable {
        let version: Int64
        let edit: KeyIndex.Edit
    }

    /// The catch-up query, prepared once per connection (it runs every 250 ms on every replica).
    /// When changes after `$1` have been pruned, a last row with op 0 says so.
    struct ChangesSince: PostgresPreparedStatement {
        static let sql = """
            (SELECT version, op, key_id, secret_hash, replaced_hash, name, permissions, enabled, expires_at_ms,
                    allowed_networks, grace_ends_at_ms, rate_limit, uses_granted, uses_spent
             FROM key_changes WHERE version > $1 ORDER BY version LIMIT $2)
            UNION ALL
            SELECT version, 0::smallint, '', ''::bytea, NULL, '', '', false, NULL, '', NULL, '', NULL, 0
            FROM change_log_horizon WHERE version > $1
            """
        typealias Row = (
            Int64, Int16, String, ByteBuffer, ByteBuffer?, String, String, Bool, Int64?, String, Int64?, String, Int64?,
            Int64
        )
        var after: Int64
        var limit: Int64

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings()
            bindings.append(after)
            bindings.append(limit)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
    }

    /// Up to `limit` changes after `version`, in version order; `outrun`: changes after
    /// `version` were pruned, so these are not all of them.
    static func since(_ version: Int64, limit: Int, catalog: PermissionCatalog, on client: PostgresClient) async throws
        -> (changes: [Change], outrun: Bool)
    {
        var changes: [Change] = []
        let rows = try await client.execute(ChangesSince(after: version, limit: Int64(limit)))
        for try await (
            version, op, id, hashBytes, replacedBytes, name, permissions, enabled, expires, networks, graceEnd, rate,
            usesGranted, usesSpent
        ) in rows {
            if op == 0 { return (changes, true) }
            guard let hash = SecretHash(bytea: hashBytes) else {
                throw StoreError.database(server: "", message: "change \(version) has a secret hash of the wrong size")
            }
            if op == 2 {
                changes.append(Change(version: version, edit: .remove(hash)))
            } else {
                let state = KeyCheckState(
                    id: id, name: name, permissions: catalog.mask(of: StoredColumns.decodePermissions(permissions)),
                    enabled: enabled, expiresAtMS: expires, allowedNetworks: StoredColumns.networks(of: networks),
                    graceEndsAtMS: graceEnd, rateLimit: StoredColumns.decodeRateLimit(rate),
                    usage: usesGranted.map { UsageGrant(granted: $0, spent: usesSpent) })
                changes.append(
                    Change(
                        version: version,
                        edit: .upsert(state, hash, replacing: replacedBytes.flatMap(SecretHash.init(bytea:)))))
            }
        }
        return (changes, false)
    }

    /// Deletes the changes made before `cutoffMS`, except the newest `keep` (and always the newest
    /// one), and raises the horizon to the highest version deleted; returns how many were deleted.
    static func prune(before cutoffMS: Int64, keep: Int64, on client: PostgresClient) async throws -> Int64 {
        let rows = try await client.query(
            """
            WITH gone AS (
                DELETE FROM key_changes
                WHERE version < (SELECT max(version) FROM key_changes) - \(max(0, keep)) AND at_ms < \(cutoffMS)
                RETURNING version),
            horizon AS (
                UPDATE change_log_horizon SET version = greatest(version, (SELECT max(gone.version) FROM gone))
                WHERE EXISTS (SELECT 1 FROM gone))
            SELECT count(*)::bigint FROM gone
            """)
        for try await count in rows.decode(Int64.self) { return count }
        return 0
    }
}

/// SQL for `audit_events`: on PostgreSQL every event is a row, api.request ones included (written
/// in batches by one multi-row INSERT over arrays).
enum AuditRows {
    /// The batch INSERT, prepared once per connection: one row per event, the columns as arrays.
    struct InsertEvents: PostgresPreparedStatement {
        static let sql = """
            INSERT INTO audit_events (seq, at_ms, action, key_id, key_name, actor, detail, denial, permissions, resource,
                                      client_address, link)
            SELECT s, a, act, k, kn, ac, d, nullif(den, -1), p, r, c, l
            FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                        $8::smallint[], $9::text[], $10::text[], $11::text[], $12::bigint[])
                 AS t(s, a, act, k, kn, ac, d, den, p, r, c, l)
            """
        typealias Row = ()
        let events: [AuditRecord]
        /// Each event's link of the hash chain (``AuditChainRows``).
        let links: [Int64]

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings()
            Self.bind(events, to: &bindings)
            bindings.append(links)
            return bindings
        }

        /// The 11 column arrays of `events`, appended to `bindings`.
        static func bind(_ events: [AuditRecord], to bindings: inout PostgresBindings) {
            bindings.append(events.map { Int64(bitPattern: $0.seq) })
            bindings.append(events.map(\.atMS))
            bindings.append(events.map(\.action.rawValue))
            bindings.append(events.map(\.keyID))
            bindings.append(events.map(\.keyName))
            bindings.append(events.map(\.actor))
            bindings.append(events.map(\.detail))
            bindings.append(events.map { Int16($0.denial?.rawValue ?? -1) })
            bindings.append(events.map { StoredColumns.encodePermissions($0.permissions) })
            bindings.append(events.map(\.resource))
            bindings.append(events.map(\.clientAddress))
        }

        func decodeRow(_ row: PostgresRow) throws -> Row {}
    }

    /// Up to `limit` events matching `query` with seq below `beforeSeq`, newest first.
    static func page(
        _ query: AuditQuery, beforeSeq: Int64, limit: Int, on connection: PostgresConnection, logger: Logger
    )
        async throws -> [AuditRecord]
    {
        var binds = PostgresBindings()
        var conditions: [String] = []
        func condition(_ sql: String, _ value: some PostgresNonThrowingEncodable) {
            binds.append(value)
            conditions.append(sql.replacingOccurrences(of: "?", with: "$\(binds.count)"))
        }
        condition("seq < ?", beforeSeq)
        if let keyID = query.keyID { condition("key_id = ?", keyID) }
        if let action = query.action {
            condition(action == .apiRequest ? "action = ?" : "action = ? AND action <> 'api.request'", action.rawValue)
        }
        if let since = query.sinceMS { condition("at_ms >= ?", since) }
        if let until = query.untilMS { condition("at_ms < ?", until) }
        binds.append(Int64(limit))
        let sql = """
            SELECT \(columns) FROM audit_events WHERE \(conditions.joined(separator: " AND "))
            ORDER BY seq DESC LIMIT $\(binds.count)
            """
        var events: [AuditRecord] = []
        for try await row in try await connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger) {
            var cells = CellReader(row)
            events.append(try record(from: &cells))
        }
        return events
    }

    /// The events with a seq in `seqs` stored in one of `links`, each with its link.
    static func events(
        seqs: ClosedRange<Int64>, links: [Int64], on connection: PostgresConnection, logger: Logger
    ) async throws -> [(AuditRecord, Int64)] {
        var events: [(AuditRecord, Int64)] = []
        for try await row in try await connection.query(
            """
            SELECT \(unescaped: columns), link FROM audit_events
            WHERE seq BETWEEN \(seqs.lowerBound) AND \(seqs.upperBound) AND link = ANY(\(links)::bigint[])
            """, logger: logger)
        {
            var cells = CellReader(row)
            let event = try record(from: &cells)
            events.append((event, try cells.next(Int64.self)))
        }
        return events
    }

    /// The columns ``record(from:)`` reads, in its order.
    private static let columns =
        "seq, at_ms, action, key_id, key_name, actor, detail, denial, permissions, resource, client_address"

    /// The event in the next cells of a row, ``columns`` in order.
    private static func record(from cells: inout CellReader) throws -> AuditRecord {
        let seq = try cells.next(Int64.self)
        let atMS = try cells.next(Int64.self)
        let actionText = try cells.next(String.self)
        guard let action = AuditAction(rawValue: actionText) else {
            throw StoreError.database(server: "", message: "audit event \(seq) has action \"\(actionText)\"")
        }
        let (keyID, keyName, actor, detail) = (
            try cells.next(String.self), try cells.next(String.self), try cells.next(String.self),
            try cells.next(String.self)
        )
        let denial = try cells.next(Int16?.self).flatMap { Denial(rawValue: Int($0)) }
        return AuditRecord(
            seq: UInt64(bitPattern: seq), atMS: atMS, action: action, keyID: keyID, keyName: keyName, actor: actor,
            detail: detail, denial: denial, permissions: StoredColumns.decodePermissions(try cells.next(String.self)),
            resource: try cells.next(String.self), clientAddress: try cells.next(String.self))
    }
}

/// Reads a row's cells in order, one concrete type at a time: for the start-up load of every
/// key, where the tuple decode (`row.decode((A, B, …).self)`, variadic generics) spent more time
/// in runtime metadata lookups than in decoding.
struct CellReader {
    private var cells: PostgresRow.Iterator

    init(_ row: PostgresRow) { cells = row.makeIterator() }

    mutating func next<T: PostgresDecodable>(_: T.Type) throws -> T {
        guard let cell = cells.next() else {
            throw StoreError.database(server: "", message: "a row has fewer columns than asked for")
        }
        return try cell.decode(T.self)
    }
}

/// Everything one group commit writes (``PostgresKeyStore``), as one statement: the keys' final
/// rows (inserted, updated, deleted), the admin events, then — after the change-log lock — the
/// change rows, and the `NOTIFY` of the last version. One round trip instead of one per kind of
/// row; on its own (no key read first) it is its own transaction.
enum BatchRows {
    // Parameters: $1–$11 inserted keys, $12–$22 events, $23–$31 changes, $32 the NOTIFY channel,
    // $33 the NULL marker, $34 the change-log lock, $35 the admin tokens' hashes, $36 the inserted
    // keys' allowlists, $37 the changes' allowlists, $38 the changes' grace ends, $39 the inserted
    // keys' rate limits, $40 the changes' rate limits, $41 the inserted keys' usage grants, $42 and
    // $43 the changes' grants and spent counts, $44 the digest of the events (their link of the
    // audit hash chain); then, for updates and deletions only, $45–$55 updated keys, $56 their
    // allowlists, $57 deleted ids, $58 and $59 the updated keys' grace secrets and grace ends, $60
    // their rate limits, $61 their usage grants. A batch of creations binds the first 44 alone.
    private static let guardAndInserted = """
        -- The batch's admin tokens, held until the commit (a revocation waits for it); unless every
        -- one is still there, the statement writes nothing.
        authorized AS (SELECT token_hash FROM admin_tokens WHERE token_hash = ANY($35::bytea[]) FOR KEY SHARE),
        allowed AS (SELECT count(*) = cardinality($35::bytea[]) AS ok FROM authorized),
        inserted AS (
            INSERT INTO keys (id, name, secret_hash, hint, permissions, enabled, created_at_ms, updated_at_ms,
                              expires_at_ms, last_used_at_ms, rotated_at_ms, allowed_networks, rate_limit, uses_granted)
            SELECT id, name, h, hint, p, e, c, m, nullif(x, $33), nullif(l, $33), nullif(r, $33), n, rl, nullif(ug, $33)
            FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::boolean[], $7::bigint[],
                        $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $36::text[], $39::text[], $41::bigint[])
                 AS u(id, name, h, hint, p, e, c, m, x, l, r, n, rl, ug)
            WHERE (SELECT ok FROM allowed))
        """
    private static let updatedAndDeleted = """
        updated AS (
            UPDATE keys SET name = u.name, hint = u.hint, permissions = u.p, enabled = u.e, updated_at_ms = u.m,
                            expires_at_ms = nullif(u.x, $33), rotated_at_ms = nullif(u.r, $33), secret_hash = u.h,
                            allowed_networks = u.n, grace_secret_hash = nullif(u.gh, ''::bytea),
                            grace_ends_at_ms = nullif(u.ge, $33), rate_limit = u.rl, uses_granted = nullif(u.ug, $33),
                            -- The spent count is the audit writers' to raise; unlimited, it starts again.
                            uses_spent = CASE WHEN u.ug = $33 THEN 0 ELSE keys.uses_spent END
            FROM unnest($45::text[], $46::text[], $47::bytea[], $48::text[], $49::text[], $50::boolean[], $51::bigint[],
                        $52::bigint[], $53::bigint[], $54::bigint[], $55::bigint[], $56::text[], $58::bytea[],
                        $59::bigint[], $60::text[], $61::bigint[])
                 AS u(id, name, h, hint, p, e, c, m, x, l, r, n, gh, ge, rl, ug)
            WHERE keys.id = u.id AND (SELECT ok FROM allowed)),
        deleted AS (DELETE FROM keys WHERE id = ANY($57::text[]) AND (SELECT ok FROM allowed))
        """
    private static let eventsAndChanges = """
        -- The events are one link of the audit hash chain (AuditChainRows), named by their first seq.
        events AS (
            INSERT INTO audit_events (seq, at_ms, action, key_id, key_name, actor, detail, denial, permissions, resource,
                                      client_address, link)
            SELECT s, a, act, k, kn, ac, d, nullif(den, -1), p, r, c, (SELECT min(x) FROM unnest($12::bigint[]) x)
            FROM unnest($12::bigint[], $13::bigint[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
                        $19::smallint[], $20::text[], $21::text[], $22::text[]) AS t(s, a, act, k, kn, ac, d, den, p, r, c)
            WHERE (SELECT ok FROM allowed)),
        -- After the tokens (allowed): a revocation holds its token, then the chain, in that order too.
        head AS (
            UPDATE audit_chain SET head_position = head_position + 1, head_hash = sha256(head_hash || $44::bytea)
            WHERE cardinality($12::bigint[]) > 0 AND (SELECT ok FROM allowed)
            RETURNING head_position, head_hash),
        linked AS (
            INSERT INTO audit_links (position, first_seq, last_seq, at_ms, count, hash)
            SELECT head_position, (SELECT min(x) FROM unnest($12::bigint[]) x), (SELECT max(x) FROM unnest($12::bigint[]) x),
                   (SELECT max(x) FROM unnest($13::bigint[]) x), cardinality($12::bigint[]), head_hash
            FROM head),
        -- Taken before any change row takes a version (the rows are sorted, so all of this runs first)
        -- and held until the commit: versions become visible in order.
        locked AS (SELECT pg_advisory_xact_lock($34) WHERE cardinality($23::bigint[]) > 0 AND (SELECT ok FROM allowed)),
        changes AS (
            INSERT INTO key_changes (at_ms, op, key_id, secret_hash, replaced_hash, name, permissions, enabled, expires_at_ms,
                                     allowed_networks, grace_ends_at_ms, rate_limit, uses_granted, uses_spent)
            SELECT a, op, k, h, nullif(rh, ''::bytea), n, p, e, nullif(x, $33), nw, nullif(ge, $33), rl, nullif(ug, $33), us
            FROM locked, unnest($23::bigint[], $24::smallint[], $25::text[], $26::bytea[], $27::bytea[], $28::text[],
                                $29::text[], $30::boolean[], $31::bigint[], $37::text[], $38::bigint[], $40::text[],
                                $42::bigint[], $43::bigint[])
                 WITH ORDINALITY AS u(a, op, k, h, rh, n, p, e, x, nw, ge, rl, ug, us, i)
            ORDER BY i
            RETURNING version)
        SELECT coalesce(array_agg(version ORDER BY version), '{}')::bigint[],
               (SELECT coalesce(array_agg(token_hash), '{}')::bytea[] FROM authorized),
               CASE WHEN count(*) > 0 THEN pg_notify($32, max(version)::text) END
        FROM changes
        """

    /// What a batch's statement answers: the versions of its changes (ascending; none when a
    /// token was not valid) and which of its admin tokens were valid.
    struct Written: Sendable {
        var versions: [Int64]
        var validTokens: [SecretHash]

        init(versions: [Int64], validTokens: [SecretHash]) {
            self.versions = versions
            self.validTokens = validTokens
        }

        init(_ row: PostgresRow) throws {
            var cells = CellReader(row)
            versions = try cells.next([Int64].self)
            validTokens = try cells.next([ByteBuffer].self).compactMap(SecretHash.init(bytea:))
        }
    }

    /// A batch of creations: prepared once per connection. Parsing, analysing and planning the
    /// statement each time had been about 40% of PostgreSQL's CPU at c=8 (`perf record -a`). It
    /// scans no table but `admin_tokens` (a few rows), so its generic plan cannot turn into a scan
    /// of a large table.
    struct Creations: PostgresPreparedStatement {
        static let sql = "WITH \(guardAndInserted),\n\(eventsAndChanges)"
        typealias Row = Written
        let batch: Batch

        func makeBindings() throws -> PostgresBindings { batch.bindings() }

        func decodeRow(_ row: PostgresRow) throws -> Row { try Written(row) }
    }

    /// Any other batch: sent unprepared, so that PostgreSQL plans it for its arrays each time (a
    /// generic plan made while `keys` was small would scan the table for the updates and deletions).
    private static let anySQL = "WITH \(guardAndInserted),\n\(updatedAndDeleted),\n\(eventsAndChanges)"

    /// What one batch writes, and the admin tokens it is made with.
    struct Batch: Sendable {
        var tokens: [SecretHash]
        var inserted: [StoredKey]
        var updated: [StoredKey]
        var deleted: [String]
        var events: [AuditRecord]
        var changes: [(write: KeyWrite, atMS: Int64)]

        var onlyCreates: Bool { updated.isEmpty && deleted.isEmpty }

        /// One change-log row per index entry of each write, in order.
        var changeRows: [(entry: KeyWrite.IndexEntry, key: KeyRecord, atMS: Int64)] {
            changes.flatMap { write, atMS in write.indexEntries.map { ($0, write.key, atMS) } }
        }

        func bindings() -> PostgresBindings {
            var binds = PostgresBindings()
            let rows = changeRows
            bindKeys(inserted, to: &binds)
            AuditRows.InsertEvents.bind(events, to: &binds)
            bindChanges(rows, to: &binds)
            binds.append(PostgresSchema.changeChannel)
            binds.append(absent)
            binds.append(PostgresSchema.lockID + 1)
            binds.append(tokens.map(\.bytea))
            binds.append(inserted.map { StoredColumns.encodeNetworks($0.key.allowedNetworks) })
            binds.append(rows.map { StoredColumns.encodeNetworks($0.key.allowedNetworks) })
            binds.append(
                rows.map { row in
                    if case .put(_, graceSecret: true) = row.entry { return row.key.graceEndsAtMS ?? absent }
                    return absent
                })
            binds.append(inserted.map { StoredColumns.encodeRateLimit($0.key.rateLimit) })
            binds.append(rows.map { StoredColumns.encodeRateLimit($0.key.rateLimit) })
            binds.append(inserted.map { $0.key.usage?.granted ?? absent })
            binds.append(rows.map { $0.key.usage?.granted ?? absent })
            binds.append(rows.map { $0.key.usage?.spent ?? 0 })
            binds.append(ByteBuffer(bytes: AuditChain.digest(of: events.sorted { $0.seq < $1.seq })))
            if !onlyCreates {
                bindKeys(updated, to: &binds)
                binds.append(updated.map { StoredColumns.encodeNetworks($0.key.allowedNetworks) })
                binds.append(deleted)
                binds.append(updated.map { $0.graceHash?.bytea ?? ByteBuffer() })
                binds.append(updated.map { $0.graceHash == nil ? absent : $0.key.graceEndsAtMS ?? absent })
                binds.append(updated.map { StoredColumns.encodeRateLimit($0.key.rateLimit) })
                binds.append(updated.map { $0.key.usage?.granted ?? absent })
            }
            return binds
        }
    }

    /// NULL in a bigint array column (arrays of optionals do not encode).
    private static let absent = Int64.min

    /// Writes a batch (nothing when one of its tokens is not valid).
    static func write(_ batch: Batch, on connection: PostgresConnection, logger: Logger) async throws -> Written {
        var written: Written?
        if batch.onlyCreates {
            for try await row in try await connection.execute(Creations(batch: batch), logger: logger) { written = row }
        } else {
            let rows = try await connection.query(
                PostgresQuery(unsafeSQL: anySQL, binds: batch.bindings()), logger: logger)
            for try await row in rows { written = try Written(row) }
        }
        guard let written else { throw StoreError.database(server: "", message: "a batch's statement returned no row") }
        let expected = Set(written.validTokens).isSuperset(of: batch.tokens) ? batch.changeRows.count : 0
        guard written.versions.count == expected else {
            throw StoreError.database(
                server: "",
                message: "INSERT INTO key_changes returned \(written.versions.count) versions for \(expected) changes")
        }
        return written
    }

    private static func bindKeys(_ keys: [StoredKey], to binds: inout PostgresBindings) {
        binds.append(keys.map(\.key.id))
        binds.append(keys.map(\.key.name))
        binds.append(keys.map(\.hash.bytea))
        binds.append(keys.map(\.key.hint))
        binds.append(keys.map { StoredColumns.encodePermissions($0.key.permissions) })
        binds.append(keys.map(\.key.enabled))
        binds.append(keys.map(\.key.createdAtMS))
        binds.append(keys.map(\.key.updatedAtMS))
        binds.append(keys.map { $0.key.expiresAtMS ?? absent })
        binds.append(keys.map { $0.key.lastUsedAtMS ?? absent })
        binds.append(keys.map { $0.key.rotatedAtMS ?? absent })
    }

    private static func bindChanges(
        _ rows: [(entry: KeyWrite.IndexEntry, key: KeyRecord, atMS: Int64)], to binds: inout PostgresBindings
    ) {
        let keys = rows.map(\.key)
        binds.append(rows.map(\.atMS))
        binds.append(
            rows.map { row -> Int16 in
                if case .drop = row.entry { return 2 }
                return 1
            })
        binds.append(keys.map(\.id))
        binds.append(
            rows.map { row in
                switch row.entry {
                case .put(let hash, _), .drop(let hash): hash.bytea
                }
            })
        binds.append(rows.map { _ in ByteBuffer() })  // replaced_hash: rows of older versions only
        binds.append(keys.map(\.name))
        binds.append(keys.map { StoredColumns.encodePermissions($0.permissions) })
        binds.append(keys.map(\.enabled))
        binds.append(keys.map { $0.expiresAtMS ?? absent })
    }
}
