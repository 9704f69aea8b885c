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

    /// The key in a row holding ``columns``, read by column name, with its `pk`.
    private static func record(_ row: PostgresRow) throws -> (Int64, StoredKey) {
        let cells = row.makeRandomAccess()
        let id = try cells["id"].decode(String.self)
        let graceBytes = try cells["grace_secret_hash"].decode(ByteBuffer?.self)
        guard let hash = SecretHash(bytea: try cells["secret_hash"].decode(ByteBuffer.self)),
            graceBytes.map({ SecretHash(bytea: $0) != nil }) ?? true
        else {
            throw StoreError.database(server: "", message: "key \(id) has a secret hash of the wrong size")
        }
        let key = KeyRecord(
            id: id, name: try cells["name"].decode(String.self), hint: try cells["hint"].decode(String.self),
            permissions: StoredColumns.decodePermissions(try cells["permissions"].decode(String.self)),
            enabled: try cells["enabled"].decode(Bool.self), createdAtMS: try cells["created_at_ms"].decode(Int64.self),
            updatedAtMS: try cells["updated_at_ms"].decode(Int64.self),
            expiresAtMS: try cells["expires_at_ms"].decode(Int64?.self),
            lastUsedAtMS: try cells["last_used_at_ms"].decode(Int64?.self),
            rotatedAtMS: try cells["rotated_at_ms"].decode(Int64?.self),
            allowedNetworks: StoredColumns.decodeNetworks(try cells["allowed_networks"].decode(String.self)),
            graceEndsAtMS: try cells["grace_ends_at_ms"].decode(Int64?.self),
            rateLimit: StoredColumns.decodeRateLimit(try cells["rate_limit"].decode(String.self)),
            usage: try cells["uses_granted"].decode(Int64?.self).map {
                UsageGrant(granted: $0, spent: try cells["uses_spent"].decode(Int64.self))
            })
        return (
            try cells["pk"].decode(Int64.self),
            StoredKey(key: key, hash: hash, graceHash: graceBytes.flatMap(SecretHash.init(bytea:)))
        )
    }

    /// The key `id`, or nil.
    static func find(id: String, on connection: PostgresConnection, logger: Logger) async throws -> StoredKey? {
        for try await row in try await connection.query(
            "SELECT \(unescaped: columns) FROM keys WHERE id = \(id)", logger: logger)
        {
            return try record(row).1
        }
        return nil
    }

    static func page(after: Int64, limit: Int, on connection: PostgresConnection, logger: Logger) async throws
        -> [(Int64, KeyRecord)]
    {
        var page: [(Int64, KeyRecord)] = []
        for try await row in try await connection.query(
            "SELECT \(unescaped: columns) FROM keys WHERE pk > \(after) ORDER BY pk LIMIT \(Int64(limit))",
            logger: logger)
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
        var found: [String: StoredKey] = [:]
        for try await row in try await connection.query(
            "SELECT \(unescaped: columns) FROM keys WHERE id = ANY(\(ids)::text[]) ORDER BY id FOR UPDATE",
            logger: logger)
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
        let keyID: String
        let keyName: String
        let edit: KeyIndex.Edit

        /// What the change did to its key, in words (for a report of changes lost).
        var summary: String {
            switch edit {
            case .upsert(let state, _, _):
                (state.enabled ? "enabled" : "disabled") + (state.graceEndsAtMS == nil ? "" : ", grace secret")
            case .remove: "secret withdrawn (the key deleted, or its secret replaced by a rotation)"
            }
        }
    }

    /// The catch-up query, prepared once per connection (it runs every 250 ms on every replica).
    /// Every row begins with the history probe (``HistoryRows/probeColumnsSQL``, of `versions`),
    /// read in the same snapshot as the changes; a row without a version carries only that (no
    /// change). When changes after `after` have been pruned, a last row with op 0 says so.
    struct ChangesSince: PostgresPreparedStatement {
        static let statement = NamedStatement(
            """
            SELECT probe.*, change.*
            FROM (SELECT \(HistoryRows.probeColumnsSQL)) AS probe
            LEFT JOIN LATERAL (
                (SELECT version, op, key_id, secret_hash, replaced_hash, name, permissions, enabled, expires_at_ms,
                        allowed_networks, grace_ends_at_ms, rate_limit, uses_granted, uses_spent
                 FROM key_changes WHERE version > {after} ORDER BY version LIMIT {limit})
                UNION ALL
                SELECT version, 0::smallint, '', ''::bytea, NULL, '', '', false, NULL, '', NULL, '', NULL, 0
                FROM change_log_horizon WHERE version > {after}
            ) AS change ON true
            """)
        static let sql = statement.sql
        typealias Row = PostgresRandomAccessRow
        var after: Int64
        var limit: Int64
        var versions: [Int64]

        func makeBindings() throws -> PostgresBindings {
            var values = NamedValues()
            values.set("after", after)
            values.set("limit", limit)
            values.set("versions", versions)
            return try Self.statement.bindings(values)
        }

        func decodeRow(_ row: PostgresRow) throws -> Row { row.makeRandomAccess() }
    }

    /// A page of the change log, with the history of the database it was read from.
    struct Page {
        /// Up to the limit asked for, in version order.
        var changes: [Change] = []
        /// Changes after the version asked for were pruned: these are not all of them.
        var outrun = false
        var history: DatabaseHistory
        /// Which of the versions asked about the database lacks (``HistoryRows``).
        var missing: [Int64]
    }

    /// Up to `limit` changes after `version`, and whether the database holds each of `anchors`
    /// (versions applied before).
    static func since(
        _ version: Int64, anchors: [Int64], limit: Int, catalog: PermissionCatalog, on client: PostgresClient
    ) async throws -> Page {
        var page: Page?
        let rows = try await client.execute(ChangesSince(after: version, limit: Int64(limit), versions: anchors))
        for try await row in rows {
            if page == nil {
                page = Page(history: try DatabaseHistory(row), missing: try row["missing"].decode([Int64].self))
            }
            guard let version = try row["version"].decode(Int64?.self) else { continue }
            let op = try row["op"].decode(Int16.self)
            if op == 0 {
                page?.outrun = true
                break
            }
            guard let hash = SecretHash(bytea: try row["secret_hash"].decode(ByteBuffer.self)) else {
                throw StoreError.database(server: "", message: "change \(version) has a secret hash of the wrong size")
            }
            let (keyID, keyName) = (try row["key_id"].decode(String.self), try row["name"].decode(String.self))
            if op == 2 {
                page?.changes.append(Change(version: version, keyID: keyID, keyName: keyName, edit: .remove(hash)))
            } else {
                let state = KeyCheckState(
                    id: keyID, name: keyName,
                    permissions: catalog.mask(
                        of: StoredColumns.decodePermissions(try row["permissions"].decode(String.self))),
                    enabled: try row["enabled"].decode(Bool.self),
                    expiresAtMS: try row["expires_at_ms"].decode(Int64?.self),
                    allowedNetworks: StoredColumns.networks(of: try row["allowed_networks"].decode(String.self)),
                    graceEndsAtMS: try row["grace_ends_at_ms"].decode(Int64?.self),
                    rateLimit: StoredColumns.decodeRateLimit(try row["rate_limit"].decode(String.self)),
                    usage: try row["uses_granted"].decode(Int64?.self).map {
                        UsageGrant(granted: $0, spent: try row["uses_spent"].decode(Int64.self))
                    })
                let replaced = try row["replaced_hash"].decode(ByteBuffer?.self)
                page?.changes.append(
                    Change(
                        version: version, keyID: keyID, keyName: keyName,
                        edit: .upsert(state, hash, replacing: replaced.flatMap(SecretHash.init(bytea:)))))
            }
        }
        guard let page else { throw StoreError.database(server: "", message: "the catch-up query returned no row") }
        return page
    }

    /// Deletes the changes made before `cutoffMS`, except the newest `keep` (and always the newest
    /// one), and raises the horizon to the highest version deleted; returns how many were deleted.
    static func prune(before cutoffMS: Int64, keep: Int64, on client: PostgresClient) async throws -> Int64 {
        let rows = try await client.query(
            """
            WITH gone AS (
                DELETE FROM key_changes
                WHERE version < (SELECT version FROM key_changes ORDER BY version DESC OFFSET \(max(0, keep)) LIMIT 1)
                  AND at_ms < \(cutoffMS)
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
    /// The columns an event fills, each with its array element type, in one list: the INSERTs
    /// (``insertSQL(prefix:link:)``), the bindings (``bind(_:prefix:to:)``) and the reads all
    /// come from it. `denial` is -1 in its array for none.
    private static let eventColumns: [(name: String, type: String)] = [
        ("seq", "bigint"), ("at_ms", "bigint"), ("action", "text"), ("key_id", "text"), ("key_name", "text"),
        ("actor", "text"), ("detail", "text"), ("denial", "smallint"), ("permissions", "text"), ("resource", "text"),
        ("client_address", "text"),
    ]

    /// `INSERT … SELECT … FROM unnest(…)` of events bound by ``bind(_:prefix:to:)`` under
    /// `prefix`, each stored in the link `link`: an SQL expression, over the unnested columns
    /// (`t.seq`…) and, when `linkArray` names a parameter, each event's own link (`t.link`).
    static func insertSQL(prefix: String, link: String, linkArray: String? = nil) -> String {
        let names = eventColumns.map(\.name)
        let selected = names.map { $0 == "denial" ? "nullif(t.denial, -1)" : "t.\($0)" }
        var arrays = eventColumns.map { "{\(prefix)\($0.name)}::\($0.type)[]" }
        var aliases = names
        if let linkArray {
            arrays.append("{\(linkArray)}::bigint[]")
            aliases.append("link")
        }
        return """
            INSERT INTO audit_events (\(names.joined(separator: ", ")), link)
            SELECT \(selected.joined(separator: ", ")), \(link)
            FROM unnest(\(arrays.joined(separator: ", "))) AS t(\(aliases.joined(separator: ", ")))
            """
    }

    /// The batch INSERT of the audit sink, prepared once per connection: one row per event, the
    /// columns as arrays, each event's link beside it.
    struct InsertEvents: PostgresPreparedStatement {
        static let statement = NamedStatement(insertSQL(prefix: "", link: "t.link", linkArray: "link"))
        static let sql = statement.sql
        typealias Row = ()
        let events: [AuditRecord]
        /// Each event's link of the hash chain (``AuditChainRows``).
        let links: [Int64]

        func makeBindings() throws -> PostgresBindings {
            var values = NamedValues()
            AuditRows.bind(events, prefix: "", to: &values)
            values.set("link", links)
            return try Self.statement.bindings(values)
        }

        func decodeRow(_ row: PostgresRow) throws -> Row {}
    }

    /// The column arrays of `events`, bound to the parameters of ``insertSQL(prefix:link:)``.
    static func bind(_ events: [AuditRecord], prefix: String, to values: inout NamedValues) {
        values.set(prefix + "seq", events.map { Int64(bitPattern: $0.seq) })
        values.set(prefix + "at_ms", events.map(\.atMS))
        values.set(prefix + "action", events.map(\.action.rawValue))
        values.set(prefix + "key_id", events.map(\.keyID))
        values.set(prefix + "key_name", events.map(\.keyName))
        values.set(prefix + "actor", events.map(\.actor))
        values.set(prefix + "detail", events.map(\.detail))
        values.set(prefix + "denial", events.map { Int16($0.denial?.rawValue ?? -1) })
        values.set(prefix + "permissions", events.map { StoredColumns.encodePermissions($0.permissions) })
        values.set(prefix + "resource", events.map(\.resource))
        values.set(prefix + "client_address", events.map(\.clientAddress))
    }

    /// Up to `limit` events matching `query` with seq below `beforeSeq`, newest first.
    static func page(
        _ query: AuditQuery, beforeSeq: Int64, limit: Int, on connection: PostgresConnection, logger: Logger
    )
        async throws -> [AuditRecord]
    {
        var conditions = NamedConditions()
        conditions.add("seq < {before}", "before", beforeSeq)
        conditions.add("key_id = {key_id}", "key_id", query.keyID)
        conditions.add(
            query.action == .apiRequest ? "action = {action}" : "action = {action} AND action <> 'api.request'",
            "action", query.action?.rawValue)
        conditions.add("at_ms >= {since}", "since", query.sinceMS)
        conditions.add("at_ms < {until}", "until", query.untilMS)
        conditions.set("limit", Int64(limit))
        let statement = NamedStatement(
            """
            SELECT \(columns) FROM audit_events WHERE \(conditions.sql)
            ORDER BY seq DESC LIMIT {limit}
            """)
        var events: [AuditRecord] = []
        for try await row in try await connection.query(statement.query(conditions.values), logger: logger) {
            events.append(try record(row.makeRandomAccess()))
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
            let cells = row.makeRandomAccess()
            events.append((try record(cells), try cells["link"].decode(Int64.self)))
        }
        return events
    }

    /// The columns ``record(_:)`` reads.
    private static let columns = eventColumns.map(\.name).joined(separator: ", ")

    /// The event in a row holding ``columns``, read by column name.
    private static func record(_ row: PostgresRandomAccessRow) throws -> AuditRecord {
        let seq = try row["seq"].decode(Int64.self)
        let actionText = try row["action"].decode(String.self)
        guard let action = AuditAction(rawValue: actionText) else {
            throw StoreError.database(server: "", message: "audit event \(seq) has action \"\(actionText)\"")
        }
        return AuditRecord(
            seq: UInt64(bitPattern: seq), atMS: try row["at_ms"].decode(Int64.self), action: action,
            keyID: try row["key_id"].decode(String.self), keyName: try row["key_name"].decode(String.self),
            actor: try row["actor"].decode(String.self), detail: try row["detail"].decode(String.self),
            denial: try row["denial"].decode(Int16?.self).flatMap { Denial(rawValue: Int($0)) },
            permissions: StoredColumns.decodePermissions(try row["permissions"].decode(String.self)),
            resource: try row["resource"].decode(String.self),
            clientAddress: try row["client_address"].decode(String.self))
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
    // Parameters, by name: `ins_*` the inserted keys' columns, `upd_*` the updated ones' (only in
    // ``anySQL``), `ev_*` the events' (``AuditRows/bind(_:prefix:to:)``), `ch_*` the change rows',
    // `tokens` the admin tokens' hashes, `absent` the NULL marker of bigint arrays (``absent``),
    // `change_lock` the change log's advisory lock, `events_digest` the events' link digest of
    // the audit hash chain, `notify_channel` the channel of the change NOTIFY.
    private static let guardAndInserted = """
        -- The batch's admin tokens, held until the commit (a revocation waits for it); unless every
        -- one is still there, the statement writes nothing.
        authorized AS (SELECT token_hash FROM admin_tokens WHERE token_hash = ANY({tokens}::bytea[]) FOR KEY SHARE),
        -- With a synchronous standby required (PostgresLocation), nothing is written unless the
        -- commit will wait for one.
        standby AS (
            SELECT NOT {require_standby}::boolean
                   OR (current_setting('synchronous_standby_names') <> ''
                       AND current_setting('synchronous_commit') IN ('on', 'remote_write', 'remote_apply')) AS ok),
        allowed AS (SELECT count(*) = cardinality({tokens}::bytea[]) AND (SELECT ok FROM standby) AS ok FROM authorized),
        inserted AS (
            INSERT INTO keys (id, name, secret_hash, hint, permissions, enabled, created_at_ms, updated_at_ms,
                              expires_at_ms, last_used_at_ms, rotated_at_ms, allowed_networks, rate_limit, uses_granted)
            SELECT id, name, h, hint, p, e, c, m, nullif(x, {absent}), nullif(l, {absent}), nullif(r, {absent}), n, rl,
                   nullif(ug, {absent})
            FROM unnest({ins_id}::text[], {ins_name}::text[], {ins_hash}::bytea[], {ins_hint}::text[],
                        {ins_permissions}::text[], {ins_enabled}::boolean[], {ins_created}::bigint[],
                        {ins_updated}::bigint[], {ins_expires}::bigint[], {ins_last_used}::bigint[],
                        {ins_rotated}::bigint[], {ins_networks}::text[], {ins_rate_limit}::text[],
                        {ins_uses_granted}::bigint[])
                 AS u(id, name, h, hint, p, e, c, m, x, l, r, n, rl, ug)
            WHERE (SELECT ok FROM allowed))
        """
    private static let updatedAndDeleted = """
        updated AS (
            UPDATE keys SET name = u.name, hint = u.hint, permissions = u.p, enabled = u.e, updated_at_ms = u.m,
                            expires_at_ms = nullif(u.x, {absent}), rotated_at_ms = nullif(u.r, {absent}),
                            secret_hash = u.h, allowed_networks = u.n, grace_secret_hash = nullif(u.gh, ''::bytea),
                            grace_ends_at_ms = nullif(u.ge, {absent}), rate_limit = u.rl,
                            uses_granted = nullif(u.ug, {absent}),
                            -- The spent count is the audit writers' to raise; unlimited, it starts again.
                            uses_spent = CASE WHEN u.ug = {absent} THEN 0 ELSE keys.uses_spent END
            FROM unnest({upd_id}::text[], {upd_name}::text[], {upd_hash}::bytea[], {upd_hint}::text[],
                        {upd_permissions}::text[], {upd_enabled}::boolean[], {upd_created}::bigint[],
                        {upd_updated}::bigint[], {upd_expires}::bigint[], {upd_last_used}::bigint[],
                        {upd_rotated}::bigint[], {upd_networks}::text[], {upd_grace_hash}::bytea[],
                        {upd_grace_ends}::bigint[], {upd_rate_limit}::text[], {upd_uses_granted}::bigint[])
                 AS u(id, name, h, hint, p, e, c, m, x, l, r, n, gh, ge, rl, ug)
            WHERE keys.id = u.id AND (SELECT ok FROM allowed)),
        deleted AS (DELETE FROM keys WHERE id = ANY({deleted_ids}::text[]) AND (SELECT ok FROM allowed))
        """
    private static let eventsAndChanges = """
        -- The events are one link of the audit hash chain (AuditChainRows), named by their first seq.
        events AS (
            \(AuditRows.insertSQL(prefix: "ev_", link: "(SELECT min(x) FROM unnest({ev_seq}::bigint[]) x)"))
            WHERE (SELECT ok FROM allowed)),
        -- After the tokens (allowed): a revocation holds its token, then the chain, in that order too.
        -- The link's hash is the one AuditChain.linkHash computes: sha256(previous hash || digest).
        head AS (
            UPDATE audit_chain SET head_position = head_position + 1,
                                   head_hash = sha256(head_hash || {events_digest}::bytea)
            WHERE cardinality({ev_seq}::bigint[]) > 0 AND (SELECT ok FROM allowed)
            RETURNING head_position, head_hash),
        linked AS (
            -- Key changes: history (AuditAction.isHistory), kept under the admin retention.
            INSERT INTO audit_links (position, first_seq, last_seq, at_ms, count, hash, history)
            SELECT head_position, (SELECT min(x) FROM unnest({ev_seq}::bigint[]) x),
                   (SELECT max(x) FROM unnest({ev_seq}::bigint[]) x), (SELECT max(x) FROM unnest({ev_at_ms}::bigint[]) x),
                   cardinality({ev_seq}::bigint[]), head_hash, true
            FROM head),
        -- Taken before any change row takes a version (the rows are sorted, so all of this runs first)
        -- and held until the commit: versions become visible in order.
        locked AS (
            SELECT pg_advisory_xact_lock({change_lock})
            WHERE cardinality({ch_at}::bigint[]) > 0 AND (SELECT ok FROM allowed)),
        changes AS (
            INSERT INTO key_changes (at_ms, op, key_id, secret_hash, replaced_hash, name, permissions, enabled, expires_at_ms,
                                     allowed_networks, grace_ends_at_ms, rate_limit, uses_granted, uses_spent)
            SELECT a, op, k, h, nullif(rh, ''::bytea), n, p, e, nullif(x, {absent}), nw, nullif(ge, {absent}), rl,
                   nullif(ug, {absent}), us
            FROM locked, unnest({ch_at}::bigint[], {ch_op}::smallint[], {ch_key_id}::text[], {ch_hash}::bytea[],
                                {ch_replaced_hash}::bytea[], {ch_name}::text[], {ch_permissions}::text[],
                                {ch_enabled}::boolean[], {ch_expires}::bigint[], {ch_networks}::text[],
                                {ch_grace_ends}::bigint[], {ch_rate_limit}::text[], {ch_uses_granted}::bigint[],
                                {ch_uses_spent}::bigint[])
                 WITH ORDINALITY AS u(a, op, k, h, rh, n, p, e, x, nw, ge, rl, ug, us, i)
            ORDER BY i
            RETURNING version)
        SELECT coalesce(array_agg(version ORDER BY version), '{}')::bigint[] AS versions,
               (SELECT coalesce(array_agg(token_hash), '{}')::bytea[] FROM authorized) AS valid_tokens,
               (SELECT ok FROM standby) AS durable,
               CASE WHEN count(*) > 0 THEN pg_notify({notify_channel}, max(version)::text) END
        FROM changes
        """

    /// What a batch's statement answers: the versions of its changes (ascending; none when a
    /// token was not valid, or no synchronous standby was configured when one is required),
    /// which of its admin tokens were valid, and whether the commit waits for a standby as required.
    struct Written: Sendable {
        var versions: [Int64]
        var validTokens: [SecretHash]
        var durable = true

        init(versions: [Int64], validTokens: [SecretHash]) {
            self.versions = versions
            self.validTokens = validTokens
        }

        init(_ row: PostgresRow) throws {
            let cells = row.makeRandomAccess()
            versions = try cells["versions"].decode([Int64].self)
            validTokens = try cells["valid_tokens"].decode([ByteBuffer].self).compactMap(SecretHash.init(bytea:))
            durable = try cells["durable"].decode(Bool.self)
        }
    }

    /// A batch of creations: prepared once per connection. Parsing, analysing and planning the
    /// statement each time had been about 40% of PostgreSQL's CPU at c=8 (`perf record -a`). It
    /// scans no table but `admin_tokens` (a few rows), so its generic plan cannot turn into a scan
    /// of a large table.
    struct Creations: PostgresPreparedStatement {
        static let statement = NamedStatement("WITH \(guardAndInserted),\n\(eventsAndChanges)")
        static let sql = statement.sql
        typealias Row = Written
        let batch: Batch

        func makeBindings() throws -> PostgresBindings { try Self.statement.bindings(batch.values()) }

        func decodeRow(_ row: PostgresRow) throws -> Row { try Written(row) }
    }

    /// Any other batch: sent unprepared, so that PostgreSQL plans it for its arrays each time (a
    /// generic plan made while `keys` was small would scan the table for the updates and deletions).
    static let anyBatch = NamedStatement("WITH \(guardAndInserted),\n\(updatedAndDeleted),\n\(eventsAndChanges)")

    /// What one batch writes, and the admin tokens it is made with.
    struct Batch: Sendable {
        var tokens: [SecretHash]
        var inserted: [StoredKey]
        var updated: [StoredKey]
        var deleted: [String]
        var events: [AuditRecord]
        var changes: [(write: KeyWrite, atMS: Int64)]
        /// Write nothing unless the commit waits for a synchronous standby.
        var requireStandby = false

        var onlyCreates: Bool { updated.isEmpty && deleted.isEmpty }

        /// One change-log row per index entry of each write, in order.
        var changeRows: [(entry: KeyWrite.IndexEntry, key: KeyRecord, atMS: Int64)] {
            BatchRows.changeRows(of: changes)
        }

        /// The values of the batch's statement (``Creations`` when ``onlyCreates``, else ``anyBatch``).
        func values() -> NamedValues {
            var values = NamedValues()
            let rows = changeRows
            bindKeys(inserted, prefix: "ins_", to: &values)
            AuditRows.bind(events, prefix: "ev_", to: &values)
            bindChanges(rows, to: &values)
            values.set("notify_channel", PostgresSchema.changeChannel)
            values.set("absent", absent)
            values.set("change_lock", PostgresSchema.lockID + 1)
            values.set("tokens", tokens.map(\.bytea))
            values.set("require_standby", requireStandby)
            values.set("events_digest", ByteBuffer(bytes: AuditChain.digest(of: events.sorted { $0.seq < $1.seq })))
            if !onlyCreates {
                bindKeys(updated, prefix: "upd_", to: &values)
                values.set("upd_grace_hash", updated.map { $0.graceHash?.bytea ?? ByteBuffer() })
                values.set(
                    "upd_grace_ends", updated.map { $0.graceHash == nil ? absent : $0.key.graceEndsAtMS ?? absent })
                values.set("deleted_ids", deleted)
            }
            return values
        }
    }

    /// One change-log row per index entry of each write, in order: the versions a batch's
    /// statement answers are theirs, one each.
    static func changeRows(of changes: [(write: KeyWrite, atMS: Int64)]) -> [(
        entry: KeyWrite.IndexEntry, key: KeyRecord, atMS: Int64
    )] {
        changes.flatMap { write, atMS in write.indexEntries.map { ($0, write.key, atMS) } }
    }

    /// NULL in a bigint array column (arrays of optionals do not encode).
    private static let absent = Int64.min

    /// Writes a batch (nothing when one of its tokens is not valid).
    static func write(_ batch: Batch, on connection: PostgresConnection, logger: Logger) async throws -> Written {
        var written: Written?
        if batch.onlyCreates {
            for try await row in try await connection.execute(Creations(batch: batch), logger: logger) { written = row }
        } else {
            let rows = try await connection.query(try anyBatch.query(batch.values()), logger: logger)
            for try await row in rows { written = try Written(row) }
        }
        guard let written else { throw StoreError.database(server: "", message: "a batch's statement returned no row") }
        guard written.durable else { throw StoreError.noSynchronousStandby }
        let expected = Set(written.validTokens).isSuperset(of: batch.tokens) ? batch.changeRows.count : 0
        guard written.versions.count == expected else {
            throw StoreError.database(
                server: "",
                message: "INSERT INTO key_changes returned \(written.versions.count) versions for \(expected) changes")
        }
        return written
    }

    /// The columns of `keys`, bound under `prefix`.
    private static func bindKeys(_ keys: [StoredKey], prefix: String, to values: inout NamedValues) {
        values.set(prefix + "id", keys.map(\.key.id))
        values.set(prefix + "name", keys.map(\.key.name))
        values.set(prefix + "hash", keys.map(\.hash.bytea))
        values.set(prefix + "hint", keys.map(\.key.hint))
        values.set(prefix + "permissions", keys.map { StoredColumns.encodePermissions($0.key.permissions) })
        values.set(prefix + "enabled", keys.map(\.key.enabled))
        values.set(prefix + "created", keys.map(\.key.createdAtMS))
        values.set(prefix + "updated", keys.map(\.key.updatedAtMS))
        values.set(prefix + "expires", keys.map { $0.key.expiresAtMS ?? absent })
        values.set(prefix + "last_used", keys.map { $0.key.lastUsedAtMS ?? absent })
        values.set(prefix + "rotated", keys.map { $0.key.rotatedAtMS ?? absent })
        values.set(prefix + "networks", keys.map { StoredColumns.encodeNetworks($0.key.allowedNetworks) })
        values.set(prefix + "rate_limit", keys.map { StoredColumns.encodeRateLimit($0.key.rateLimit) })
        values.set(prefix + "uses_granted", keys.map { $0.key.usage?.granted ?? absent })
    }

    private static func bindChanges(
        _ rows: [(entry: KeyWrite.IndexEntry, key: KeyRecord, atMS: Int64)], to values: inout NamedValues
    ) {
        let keys = rows.map(\.key)
        values.set("ch_at", rows.map(\.atMS))
        values.set(
            "ch_op",
            rows.map { row -> Int16 in
                if case .drop = row.entry { return 2 }
                return 1
            })
        values.set("ch_key_id", keys.map(\.id))
        values.set(
            "ch_hash",
            rows.map { row in
                switch row.entry {
                case .put(let hash, _), .drop(let hash): hash.bytea
                }
            })
        values.set("ch_replaced_hash", rows.map { _ in ByteBuffer() })  // rows of older versions only
        values.set("ch_name", keys.map(\.name))
        values.set("ch_permissions", keys.map { StoredColumns.encodePermissions($0.permissions) })
        values.set("ch_enabled", keys.map(\.enabled))
        values.set("ch_expires", keys.map { $0.expiresAtMS ?? absent })
        values.set("ch_networks", keys.map { StoredColumns.encodeNetworks($0.allowedNetworks) })
        values.set(
            "ch_grace_ends",
            rows.map { row in
                if case .put(_, graceSecret: true) = row.entry { return row.key.graceEndsAtMS ?? absent }
                return absent
            })
        values.set("ch_rate_limit", keys.map { StoredColumns.encodeRateLimit($0.rateLimit) })
        values.set("ch_uses_granted", keys.map { $0.usage?.granted ?? absent })
        values.set("ch_uses_spent", keys.map { $0.usage?.spent ?? 0 })
    }
}
