import APIKeysCore
import APIKeysStore

/// SQL for the `keys` table.
enum KeyTable {
    private static let columns = """
        pk, id, name, hint, permissions, enabled, created_at_ms, updated_at_ms, expires_at_ms, \
        last_used_at_ms, rotated_at_ms, allowed_networks, grace_ends_at_ms, rate_limit, uses_granted, uses_spent
        """

    static func insert(_ key: KeyRecord, hash: SecretHash, in db: SQLiteConnection) throws {
        try db.statement(
            """
            INSERT INTO keys (id, name, secret_hash, hint, permissions, enabled, created_at_ms, updated_at_ms,
                              expires_at_ms, last_used_at_ms, rotated_at_ms, allowed_networks, rate_limit,
                              uses_granted)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """
        ).bind(
            .text(key.id), .text(key.name), .blob(hash.digest), .text(key.hint),
            .text(StoredColumns.encodePermissions(key.permissions)), .integer(key.enabled ? 1 : 0),
            .integer(key.createdAtMS), .integer(key.updatedAtMS), .optional(key.expiresAtMS),
            .optional(key.lastUsedAtMS), .optional(key.rotatedAtMS),
            .text(StoredColumns.encodeNetworks(key.allowedNetworks)),
            .text(StoredColumns.encodeRateLimit(key.rateLimit)), .optional(key.usage?.granted)
        ).run()
    }

    /// Writes every field but the id and creation time, with the key's secret hashes.
    static func update(_ key: KeyRecord, hash: SecretHash, graceHash: SecretHash?, in db: SQLiteConnection) throws {
        try db.statement(
            """
            UPDATE keys SET name = ?, hint = ?, permissions = ?, enabled = ?, updated_at_ms = ?,
                            expires_at_ms = ?, rotated_at_ms = ?, secret_hash = ?, allowed_networks = ?,
                            grace_secret_hash = ?, grace_ends_at_ms = ?, rate_limit = ?, uses_granted = ?,
                            -- The spent count is the audit writer's to raise; unlimited, it starts again.
                            uses_spent = CASE WHEN ? IS NULL THEN 0 ELSE uses_spent END
            WHERE id = ?
            """
        ).bind(
            .text(key.name), .text(key.hint), .text(StoredColumns.encodePermissions(key.permissions)),
            .integer(key.enabled ? 1 : 0), .integer(key.updatedAtMS), .optional(key.expiresAtMS),
            .optional(key.rotatedAtMS), .blob(hash.digest), .text(StoredColumns.encodeNetworks(key.allowedNetworks)),
            graceHash.map { .blob($0.digest) } ?? .null, graceHash == nil ? .null : .optional(key.graceEndsAtMS),
            .text(StoredColumns.encodeRateLimit(key.rateLimit)), .optional(key.usage?.granted),
            .optional(key.usage?.granted),
            .text(key.id)
        ).run()
    }

    static func delete(id: String, in db: SQLiteConnection) throws {
        try db.statement("DELETE FROM keys WHERE id = ?").bind(.text(id)).run()
    }

    /// The key with `id` and its secret hashes, or ``KeyError/keyNotFound(id:)``.
    static func find(id: String, in db: SQLiteConnection) throws -> StoredKey {
        let statement = try db.statement("SELECT \(columns), secret_hash, grace_secret_hash FROM keys WHERE id = ?")
            .bind(.text(id))
        guard
            let found = try statement.firstRow({ row in
                StoredKey(
                    key: record(row), hash: try hash(row, column: 16, in: db),
                    graceHash: row.isNull(17) ? nil : try hash(row, column: 17, in: db))
            })
        else {
            throw KeyError.keyNotFound(id: id)
        }
        return found
    }

    /// Up to `limit` keys after the row `afterPK`, oldest first, with each row's pk.
    static func page(afterPK: Int64, limit: Int, in db: SQLiteConnection) throws -> [(pk: Int64, key: KeyRecord)] {
        try db.statement("SELECT \(columns) FROM keys WHERE pk > ? ORDER BY pk LIMIT ?")
            .bind(.integer(afterPK), .integer(Int64(limit)))
            .rows { ($0.int64(0), record($0)) }
    }

    /// Loads every key into `index`, streaming the rows (a million keys load in about a second).
    static func load(into index: KeyIndex, in db: SQLiteConnection) throws {
        var masks = StoredColumns.MaskCache(catalog: index.catalog)
        let statement = try db.statement(
            """
            SELECT secret_hash, id, name, permissions, enabled, expires_at_ms, allowed_networks, grace_secret_hash,
                   grace_ends_at_ms, rate_limit, uses_granted, uses_spent
            FROM keys
            """)
        try statement.scan { row in
            let mask = masks.mask(of: row.text(3))
            var state = KeyCheckState(
                id: row.text(1), name: row.text(2), permissions: mask, enabled: row.int64(4) != 0,
                expiresAtMS: row.optionalInt64(5), allowedNetworks: StoredColumns.networks(of: row.text(6)),
                rateLimit: StoredColumns.decodeRateLimit(row.text(9)),
                usage: row.optionalInt64(10).map { UsageGrant(granted: $0, spent: row.int64(11)) })
            index.upsert(state, hash: try hash(row, column: 0, in: db))
            if !row.isNull(7), let graceEnd = row.optionalInt64(8) {
                state.graceEndsAtMS = graceEnd
                index.upsert(state, hash: try hash(row, column: 7, in: db))
            }
            return true
        }
    }

    /// Number of keys.
    static func count(in db: SQLiteConnection) throws -> Int {
        Int(try db.statement("SELECT count(*) FROM keys").firstRow { $0.int64(0) } ?? 0)
    }

    private static func hash(_ row: SQLiteStatement, column: Int32, in db: SQLiteConnection) throws -> SecretHash {
        guard let hash = SecretHash(digest: row.blob(column)) else {
            throw StoreError.corrupt(path: db.path, message: "a key has a secret hash of the wrong size")
        }
        return hash
    }

    /// Raises last-used times and, for keys with usage credits, the credits spent (by key id).
    static func touch(_ uses: [String: KeyUse], in db: SQLiteConnection) throws {
        for (id, use) in uses {
            try db.statement(
                """
                UPDATE keys SET last_used_at_ms = max(coalesce(last_used_at_ms, 0), ?),
                                uses_spent = uses_spent + CASE WHEN uses_granted IS NULL THEN 0 ELSE ? END
                WHERE id = ?
                """
            ).bind(.integer(use.lastAtMS), .integer(use.allowed), .text(id)).run()
        }
    }

    private static func record(_ row: SQLiteStatement) -> KeyRecord {
        KeyRecord(
            id: row.text(1), name: row.text(2), hint: row.text(3),
            permissions: StoredColumns.decodePermissions(row.text(4)), enabled: row.int64(5) != 0,
            createdAtMS: row.int64(6), updatedAtMS: row.int64(7), expiresAtMS: row.optionalInt64(8),
            lastUsedAtMS: row.optionalInt64(9), rotatedAtMS: row.optionalInt64(10),
            allowedNetworks: StoredColumns.decodeNetworks(row.text(11)), graceEndsAtMS: row.optionalInt64(12),
            rateLimit: StoredColumns.decodeRateLimit(row.text(13)),
            usage: row.optionalInt64(14).map { UsageGrant(granted: $0, spent: row.int64(15)) })
    }
}
