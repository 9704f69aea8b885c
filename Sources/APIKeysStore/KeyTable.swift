import APIKeysCore

/// SQL for the `keys` table.
enum KeyTable {
    private static let columns = """
        pk, id, name, hint, permissions, enabled, created_at_ms, updated_at_ms, expires_at_ms, \
        last_used_at_ms, rotated_at_ms, allowed_networks, grace_ends_at_ms, rate_limit
        """

    static func insert(_ key: KeyRecord, hash: SecretHash, in db: SQLiteConnection) throws {
        try db.statement(
            """
            INSERT INTO keys (id, name, secret_hash, hint, permissions, enabled, created_at_ms, updated_at_ms,
                              expires_at_ms, last_used_at_ms, rotated_at_ms, allowed_networks, rate_limit)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """
        ).bind(
            .text(key.id), .text(key.name), .blob(hash.digest), .text(key.hint),
            .text(Schema.encodePermissions(key.permissions)), .integer(key.enabled ? 1 : 0),
            .integer(key.createdAtMS), .integer(key.updatedAtMS), .optional(key.expiresAtMS),
            .optional(key.lastUsedAtMS), .optional(key.rotatedAtMS), .text(Schema.encodeNetworks(key.allowedNetworks)),
            .text(Schema.encodeRateLimit(key.rateLimit))
        ).run()
    }

    /// Writes every field but the id and creation time, with the key's secret hashes.
    static func update(_ key: KeyRecord, hash: SecretHash, graceHash: SecretHash?, in db: SQLiteConnection) throws {
        try db.statement(
            """
            UPDATE keys SET name = ?, hint = ?, permissions = ?, enabled = ?, updated_at_ms = ?,
                            expires_at_ms = ?, rotated_at_ms = ?, secret_hash = ?, allowed_networks = ?,
                            grace_secret_hash = ?, grace_ends_at_ms = ?, rate_limit = ?
            WHERE id = ?
            """
        ).bind(
            .text(key.name), .text(key.hint), .text(Schema.encodePermissions(key.permissions)),
            .integer(key.enabled ? 1 : 0), .integer(key.updatedAtMS), .optional(key.expiresAtMS),
            .optional(key.rotatedAtMS), .blob(hash.digest), .text(Schema.encodeNetworks(key.allowedNetworks)),
            graceHash.map { .blob($0.digest) } ?? .null, graceHash == nil ? .null : .optional(key.graceEndsAtMS),
            .text(Schema.encodeRateLimit(key.rateLimit)), .text(key.id)
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
                    key: record(row), hash: try hash(row, column: 14, in: db),
                    graceHash: row.isNull(15) ? nil : try hash(row, column: 15, in: db))
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
        var masks = Schema.MaskCache(catalog: index.catalog)
        let statement = try db.statement(
            """
            SELECT secret_hash, id, name, permissions, enabled, expires_at_ms, allowed_networks, grace_secret_hash,
                   grace_ends_at_ms, rate_limit
            FROM keys
            """)
        try statement.scan { row in
            let mask = masks.mask(of: row.text(3))
            var state = KeyCheckState(
                id: row.text(1), name: row.text(2), permissions: mask, enabled: row.int64(4) != 0,
                expiresAtMS: row.optionalInt64(5), allowedNetworks: Schema.networks(of: row.text(6)),
                rateLimit: Schema.decodeRateLimit(row.text(9)))
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

    /// Raises last-used times; each pair is a key id and the time of a check.
    static func touch(_ lastUsed: [String: Int64], in db: SQLiteConnection) throws {
        for (id, atMS) in lastUsed {
            try db.statement(
                """
                UPDATE keys SET last_used_at_ms = max(coalesce(last_used_at_ms, 0), ?) WHERE id = ?
                """
            ).bind(.integer(atMS), .text(id)).run()
        }
    }

    private static func record(_ row: SQLiteStatement) -> KeyRecord {
        KeyRecord(
            id: row.text(1), name: row.text(2), hint: row.text(3),
            permissions: Schema.decodePermissions(row.text(4)), enabled: row.int64(5) != 0,
            createdAtMS: row.int64(6), updatedAtMS: row.int64(7), expiresAtMS: row.optionalInt64(8),
            lastUsedAtMS: row.optionalInt64(9), rotatedAtMS: row.optionalInt64(10),
            allowedNetworks: Schema.decodeNetworks(row.text(11)), graceEndsAtMS: row.optionalInt64(12),
            rateLimit: Schema.decodeRateLimit(row.text(13)))
    }
}
