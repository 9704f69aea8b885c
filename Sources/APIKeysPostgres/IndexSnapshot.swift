import APIKeysCore
import APIKeysStore
import Logging
import PostgresNIO

/// Every key as entries of the index, with the change version and the database history they
/// reflect, read in one snapshot: what a replica loads at start, and again when its database's
/// history was rewritten (``ChangeFeed``).
struct IndexSnapshot: Sendable {
    var edits: [KeyIndex.Edit]
    /// Keys (a key in a rotation's grace has two edits).
    var keyCount: Int
    /// The newest change version the keys reflect.
    var version: Int64
    var history: DatabaseHistory
    /// A time read before the snapshot was taken: the index is current as of it.
    var startedAtMS: Int64

    /// Reads the snapshot: the table in two halves by `pk`, each decoded by its own task on its
    /// own connection (the second joins the first's exported snapshot), so that loading uses both
    /// cores.
    static func read(
        _ connection: PostgresConnection, client: PostgresClient, catalog: PermissionCatalog, clock: any WallClock,
        logger: Logger
    ) async throws -> IndexSnapshot {
        let startedAtMS = clock.nowMS()
        try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
        do {
            let snapshot =
                try await connection.query("SELECT pg_export_snapshot()", logger: logger)
                .decode(String.self).first { _ in true } ?? ""
            guard !snapshot.isEmpty, snapshot.allSatisfy({ $0.isHexDigit || $0 == "-" }) else {
                throw StoreError.database(server: "", message: "unexpected snapshot id \"\(snapshot)\"")
            }
            var (version, count, lastPK): (Int64, Int64, Int64) = (0, 0, 0)
            var history: DatabaseHistory?
            for try await row in try await connection.query(
                PostgresQuery(
                    unsafeSQL: """
                        SELECT (SELECT coalesce(max(version), 0)::bigint FROM key_changes) AS version,
                               count(*)::bigint AS count, coalesce(max(pk), 0)::bigint AS last_pk,
                               \(DatabaseHistory.columnsSQL)
                        FROM keys
                        """), logger: logger
            ) {
                let cells = row.makeRandomAccess()
                (version, count, lastPK) = try (
                    cells["version"].decode(Int64.self), cells["count"].decode(Int64.self),
                    cells["last_pk"].decode(Int64.self)
                )
                history = try DatabaseHistory(cells)
            }
            guard let history else { throw StoreError.database(server: "", message: "the key count returned no row") }
            let split = lastPK / 2
            async let upper = client.withConnection { other in
                try await other.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
                try await other.query(
                    PostgresQuery(unsafeSQL: "SET TRANSACTION SNAPSHOT '\(snapshot)'"), logger: logger)
                let edits = try await keyEdits(other, pkAbove: split, upTo: .max, catalog: catalog, logger: logger)
                try await other.query("COMMIT", logger: logger)
                return edits
            }
            let lower = try await keyEdits(connection, pkAbove: .min, upTo: split, catalog: catalog, logger: logger)
            let edits = try await lower + upper
            try await connection.query("COMMIT", logger: logger)
            return IndexSnapshot(
                edits: edits, keyCount: Int(count), version: version, history: history, startedAtMS: startedAtMS)
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }

    /// The index entries of the keys with `pk` in (`above`, `upTo`].
    private static func keyEdits(
        _ connection: PostgresConnection, pkAbove above: Int64, upTo: Int64, catalog: PermissionCatalog, logger: Logger
    ) async throws -> [KeyIndex.Edit] {
        var masks = StoredColumns.MaskCache(catalog: catalog)
        var edits: [KeyIndex.Edit] = []
        let rows = try await connection.query(
            """
            SELECT secret_hash, id, name, permissions, enabled, expires_at_ms, allowed_networks, grace_secret_hash,
                   grace_ends_at_ms, rate_limit, uses_granted, uses_spent
            FROM keys WHERE pk > \(above) AND pk <= \(upTo)
            """, logger: logger)
        for try await row in rows {
            var cells = CellReader(row)
            let (hashBytes, id, name) = try (
                cells.next(ByteBuffer.self), cells.next(String.self), cells.next(String.self)
            )
            let (permissions, enabled, expires) = try (
                cells.next(String.self), cells.next(Bool.self), cells.next(Int64?.self)
            )
            let networks = try cells.next(String.self)
            let (graceBytes, graceEnd) = try (cells.next(ByteBuffer?.self), cells.next(Int64?.self))
            let rateLimit = StoredColumns.decodeRateLimit(try cells.next(String.self))
            let (usesGranted, usesSpent) = try (cells.next(Int64?.self), cells.next(Int64.self))
            guard let hash = SecretHash(bytea: hashBytes), graceBytes.map({ SecretHash(bytea: $0) != nil }) ?? true
            else {
                throw StoreError.database(server: "", message: "key \(id) has a secret hash of the wrong size")
            }
            var state = KeyCheckState(
                id: id, name: name, permissions: masks.mask(of: permissions), enabled: enabled, expiresAtMS: expires,
                allowedNetworks: StoredColumns.networks(of: networks), rateLimit: rateLimit,
                usage: usesGranted.map { UsageGrant(granted: $0, spent: usesSpent) })
            edits.append(.upsert(state, hash, replacing: nil))
            if let graceHash = graceBytes.flatMap(SecretHash.init(bytea:)), let graceEnd {
                state.graceEndsAtMS = graceEnd
                edits.append(.upsert(state, graceHash, replacing: nil))
            }
        }
        return edits
    }
}
