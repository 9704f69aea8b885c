import APIKeysCore
import APIKeysStore
import Foundation
import Logging
import PostgresNIO

/// SQL for the `keys` table.
enum KeyRows {
    private static let columns = """
        pk, id, name, hint, permissions, enabled, created_at_ms, updated_at_ms, expires_at_ms, last_used_at_ms, \
        rotated_at_ms, secret_hash
        """

    private typealias Row = (Int64, String, String, String, String, Bool, Int64, Int64, Int64?, Int64?, Int64?, ByteBuffer)

    private static func record(_ row: Row) throws -> (Int64, StoredKey) {
        guard let hash = SecretHash(bytea: row.11) else {
            throw StoreError.database(server: "", message: "key \(row.1) has a secret hash of the wrong size")
        }
        let key = KeyRecord(
            id: row.1, name: row.2, hint: row.3, permissions: Schema.decodePermissions(row.4), enabled: row.5,
            createdAtMS: row.6, updatedAtMS: row.7, expiresAtMS: row.8, lastUsedAtMS: row.9, rotatedAtMS: row.10)
        return (row.0, StoredKey(key: key, hash: hash))
    }

    /// The key `id` (locked until the transaction ends when `forUpdate`), or nil.
    static func find(id: String, forUpdate: Bool, on connection: PostgresConnection, logger: Logger) async throws
        -> StoredKey?
    {
        let sql = "SELECT \(columns) FROM keys WHERE id = $1" + (forUpdate ? " FOR UPDATE" : "")
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

    static func apply(_ write: KeyWrite, on connection: PostgresConnection, logger: Logger) async throws {
        switch write {
        case .insert(let key, let hash):
            try await connection.query(
                """
                INSERT INTO keys (id, name, secret_hash, hint, permissions, enabled, created_at_ms, updated_at_ms,
                                  expires_at_ms, last_used_at_ms, rotated_at_ms)
                VALUES (\(key.id), \(key.name), \(hash.bytea), \(key.hint), \(Schema.encodePermissions(key.permissions)),
                        \(key.enabled), \(key.createdAtMS), \(key.updatedAtMS), \(key.expiresAtMS), \(key.lastUsedAtMS),
                        \(key.rotatedAtMS))
                """, logger: logger)
        case .update(let key, let hash, _):
            try await connection.query(
                """
                UPDATE keys SET name = \(key.name), hint = \(key.hint), permissions = \(Schema.encodePermissions(key.permissions)),
                                enabled = \(key.enabled), updated_at_ms = \(key.updatedAtMS),
                                expires_at_ms = \(key.expiresAtMS), rotated_at_ms = \(key.rotatedAtMS),
                                secret_hash = \(hash.bytea)
                WHERE id = \(key.id)
                """, logger: logger)
        case .delete(let key, _):
            try await connection.query("DELETE FROM keys WHERE id = \(key.id)", logger: logger)
        }
    }

    /// Raises last-used times; each pair is a key id and the time of its last check.
    static func touch(_ lastUsed: [String: Int64], on connection: PostgresConnection, logger: Logger) async throws {
        guard !lastUsed.isEmpty else { return }
        let ids = Array(lastUsed.keys)
        let times = ids.map { lastUsed[$0]! }
        try await connection.query(
            """
            UPDATE keys SET last_used_at_ms = greatest(coalesce(last_used_at_ms, 0), u.at)
            FROM unnest(\(ids)::text[], \(times)::bigint[]) AS u(id, at) WHERE keys.id = u.id
            """, logger: logger)
    }
}

/// SQL for the change log, `key_changes`.
enum ChangeRows {
    /// One committed change, as a replica applies it to its index.
    struct Change: Sendable {
        let version: Int64
        let edit: KeyIndex.Edit
    }

    /// Appends the change of `write` (the caller holds the change-log lock); returns its version.
    static func append(_ write: KeyWrite, atMS: Int64, on connection: PostgresConnection, logger: Logger) async throws
        -> Int64
    {
        let key = write.key
        let (op, hash, replaced): (Int16, SecretHash, SecretHash?) =
            switch write {
            case .insert(_, let hash): (1, hash, nil)
            case .update(_, let hash, let old): (1, hash, old)
            case .delete(_, let hash): (2, hash, nil)
            }
        let rows = try await connection.query(
            """
            INSERT INTO key_changes (at_ms, op, key_id, secret_hash, replaced_hash, name, permissions, enabled, expires_at_ms)
            VALUES (\(atMS), \(op), \(key.id), \(hash.bytea), \(replaced?.bytea), \(key.name),
                    \(Schema.encodePermissions(key.permissions)), \(key.enabled), \(key.expiresAtMS))
            RETURNING version
            """, logger: logger)
        for try await version in rows.decode(Int64.self) { return version }
        throw StoreError.database(server: "", message: "INSERT INTO key_changes returned no version")
    }

    /// The catch-up query, prepared once per connection (it runs every 250 ms on every replica).
    struct ChangesSince: PostgresPreparedStatement {
        static let sql = """
            SELECT version, op, key_id, secret_hash, replaced_hash, name, permissions, enabled, expires_at_ms
            FROM key_changes WHERE version > $1 ORDER BY version LIMIT $2
            """
        typealias Row = (Int64, Int16, String, ByteBuffer, ByteBuffer?, String, String, Bool, Int64?)
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

    /// Up to `limit` changes after `version`, in version order.
    static func since(_ version: Int64, limit: Int, catalog: PermissionCatalog, on client: PostgresClient) async throws
        -> [Change]
    {
        var changes: [Change] = []
        let rows = try await client.execute(ChangesSince(after: version, limit: Int64(limit)))
        for try await (version, op, id, hashBytes, replacedBytes, name, permissions, enabled, expires) in rows {
            guard let hash = SecretHash(bytea: hashBytes) else {
                throw StoreError.database(server: "", message: "change \(version) has a secret hash of the wrong size")
            }
            if op == 2 {
                changes.append(Change(version: version, edit: .remove(hash)))
            } else {
                let state = KeyCheckState(
                    id: id, name: name, permissions: catalog.mask(of: Schema.decodePermissions(permissions)),
                    enabled: enabled, expiresAtMS: expires)
                changes.append(
                    Change(version: version, edit: .upsert(state, hash, replacing: replacedBytes.flatMap(SecretHash.init(bytea:)))))
            }
        }
        return changes
    }
}

/// SQL for `audit_events`: on PostgreSQL every event is a row, api.request ones included (written
/// in batches by one multi-row INSERT over arrays).
enum AuditRows {
    /// The batch INSERT, prepared once per connection: one row per event, the columns as arrays.
    struct InsertEvents: PostgresPreparedStatement {
        static let sql = """
            INSERT INTO audit_events (seq, at_ms, action, key_id, key_name, actor, detail, denial, permissions, resource,
                                      client_address)
            SELECT s, a, act, k, kn, ac, d, nullif(den, -1), p, r, c
            FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                        $8::smallint[], $9::text[], $10::text[], $11::text[])
                 AS t(s, a, act, k, kn, ac, d, den, p, r, c)
            """
        typealias Row = ()
        let events: [AuditRecord]

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings()
            bindings.append(events.map { Int64(bitPattern: $0.seq) })
            bindings.append(events.map(\.atMS))
            bindings.append(events.map(\.action.rawValue))
            bindings.append(events.map(\.keyID))
            bindings.append(events.map(\.keyName))
            bindings.append(events.map(\.actor))
            bindings.append(events.map(\.detail))
            bindings.append(events.map { Int16($0.denial?.rawValue ?? -1) })
            bindings.append(events.map { Schema.encodePermissions($0.permissions) })
            bindings.append(events.map(\.resource))
            bindings.append(events.map(\.clientAddress))
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Row {}
    }

    static func insert(_ events: [AuditRecord], on connection: PostgresConnection, logger: Logger) async throws {
        guard !events.isEmpty else { return }
        try await connection.execute(InsertEvents(events: events), logger: logger)
    }

    /// Up to `limit` events matching `query` with seq below `beforeSeq`, newest first.
    static func page(_ query: AuditQuery, beforeSeq: Int64, limit: Int, on connection: PostgresConnection, logger: Logger)
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
            SELECT seq, at_ms, action, key_id, key_name, actor, detail, denial, permissions, resource, client_address
            FROM audit_events WHERE \(conditions.joined(separator: " AND ")) ORDER BY seq DESC LIMIT $\(binds.count)
            """
        var events: [AuditRecord] = []
        for try await row in try await connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger)
            .decode((Int64, Int64, String, String, String, String, String, Int16?, String, String, String).self)
        {
            guard let action = AuditAction(rawValue: row.2) else {
                throw StoreError.database(server: "", message: "audit event \(row.0) has action \"\(row.2)\"")
            }
            events.append(
                AuditRecord(
                    seq: UInt64(bitPattern: row.0), atMS: row.1, action: action, keyID: row.3, keyName: row.4, actor: row.5,
                    detail: row.6, denial: row.7.flatMap { Denial(rawValue: Int($0)) },
                    permissions: Schema.decodePermissions(row.8), resource: row.9, clientAddress: row.10))
        }
        return events
    }
}
