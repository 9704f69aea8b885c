import APIKeysStore
import Logging
import PostgresNIO

/// The PostgreSQL schema as named, recorded migration steps (`schema_migrations`), applied at
/// start under an advisory lock so that replicas starting together migrate once.
enum PostgresSchema {
    struct Migration {
        let version: Int
        let name: String
        /// One statement each (the extended protocol runs one at a time).
        let statements: [String]
    }

    /// The advisory lock of migrations and of the first admin token ("apikeyd" in ASCII).
    static let lockID: Int64 = 0x61_7069_6b65_7964

    /// The channel NOTIFY announces new change versions on.
    static let changeChannel = "apikeyd_changes"

    static let migrations: [Migration] = [
        Migration(
            version: 1, name: "keys, change log, admin tokens, audit trail",
            statements: [
                """
                CREATE TABLE keys (
                    pk bigserial PRIMARY KEY, id text NOT NULL UNIQUE, name text NOT NULL,
                    secret_hash bytea NOT NULL UNIQUE, hint text NOT NULL, permissions text NOT NULL,
                    enabled boolean NOT NULL, created_at_ms bigint NOT NULL, updated_at_ms bigint NOT NULL,
                    expires_at_ms bigint, last_used_at_ms bigint, rotated_at_ms bigint)
                """,
                // One row per change of a key, in commit order (see PostgresKeyStore.commit): what a
                // replica applies to its index. op 1 = the key's state under secret_hash (forgetting
                // replaced_hash), op 2 = the key and secret_hash are gone.
                """
                CREATE TABLE key_changes (
                    version bigserial PRIMARY KEY, at_ms bigint NOT NULL, op smallint NOT NULL, key_id text NOT NULL,
                    secret_hash bytea NOT NULL, replaced_hash bytea, name text NOT NULL, permissions text NOT NULL,
                    enabled boolean NOT NULL, expires_at_ms bigint)
                """,
                """
                CREATE TABLE admin_tokens (
                    pk bigserial PRIMARY KEY, name text NOT NULL UNIQUE, token_hash bytea NOT NULL UNIQUE,
                    created_at_ms bigint NOT NULL)
                """,
                """
                CREATE TABLE audit_events (
                    seq bigint PRIMARY KEY, at_ms bigint NOT NULL, action text NOT NULL, key_id text NOT NULL,
                    key_name text NOT NULL, actor text NOT NULL, detail text NOT NULL, denial smallint,
                    permissions text NOT NULL, resource text NOT NULL, client_address text NOT NULL)
                """,
                "CREATE INDEX audit_events_by_key ON audit_events (key_id, seq)",
                "CREATE INDEX audit_events_by_admin_action ON audit_events (action, seq) WHERE action <> 'api.request'",
                "CREATE INDEX audit_events_by_time ON audit_events (at_ms)",
                // Each start of a replica takes a number: the replica part of its audit seqs.
                "CREATE SEQUENCE replica_numbers",
            ]),
        Migration(
            version: 2, name: "change-log horizon",
            statements: [
                // The highest version pruned from key_changes (ChangeFeed.prune): a replica that has
                // not applied it can no longer catch up from the log.
                """
                CREATE TABLE change_log_horizon (
                    one boolean PRIMARY KEY DEFAULT true CHECK (one), version bigint NOT NULL)
                """,
                "INSERT INTO change_log_horizon (version) VALUES (0)",
            ]),
        Migration(
            version: 3, name: "key allowlists",
            statements: [
                // Normalised CIDR networks joined by spaces; '' = any address.
                "ALTER TABLE keys ADD COLUMN allowed_networks text NOT NULL DEFAULT ''",
                "ALTER TABLE key_changes ADD COLUMN allowed_networks text NOT NULL DEFAULT ''",
            ]),
        Migration(
            version: 4, name: "rotation grace",
            statements: [
                // The secret a rotation with a grace period replaced, accepted until grace_ends_at_ms.
                "ALTER TABLE keys ADD COLUMN grace_secret_hash bytea",
                "ALTER TABLE keys ADD COLUMN grace_ends_at_ms bigint",
                // On an op 1 change: secret_hash is that grace secret, accepted until then.
                "ALTER TABLE key_changes ADD COLUMN grace_ends_at_ms bigint",
            ]),
        Migration(
            version: 5, name: "rate limits",
            statements: [
                // `requests/period seconds/burst` (KeyRateLimit.stored); '' = none.
                "ALTER TABLE keys ADD COLUMN rate_limit text NOT NULL DEFAULT ''",
                "ALTER TABLE key_changes ADD COLUMN rate_limit text NOT NULL DEFAULT ''",
            ]),
        Migration(
            version: 6, name: "usage credits",
            statements: [
                // Granted in all (NULL = unlimited), and spent as the replicas' audit writers count them.
                "ALTER TABLE keys ADD COLUMN uses_granted bigint",
                "ALTER TABLE keys ADD COLUMN uses_spent bigint NOT NULL DEFAULT 0",
                "ALTER TABLE key_changes ADD COLUMN uses_granted bigint",
                "ALTER TABLE key_changes ADD COLUMN uses_spent bigint NOT NULL DEFAULT 0",
            ]),
        Migration(
            version: 7, name: "audit hash chain",
            statements: [
                // Each event's link of the chain (AuditChainRows: the link's first seq); NULL for
                // events stored before this version, outside the chain.
                "ALTER TABLE audit_events ADD COLUMN link bigint",
                """
                CREATE TABLE audit_links (
                    position bigint PRIMARY KEY, first_seq bigint NOT NULL, last_seq bigint NOT NULL,
                    at_ms bigint NOT NULL, count bigint NOT NULL, hash bytea NOT NULL)
                """,
                // The head (last link) and the anchor (last link pruned), one row every replica updates.
                """
                CREATE TABLE audit_chain (
                    one boolean PRIMARY KEY DEFAULT true CHECK (one), head_position bigint NOT NULL,
                    head_hash bytea NOT NULL, anchor_position bigint NOT NULL, anchor_hash bytea NOT NULL)
                """,
                """
                INSERT INTO audit_chain (head_position, head_hash, anchor_position, anchor_hash)
                VALUES (0, decode(repeat('00', 32), 'hex'), 0, decode(repeat('00', 32), 'hex'))
                """,
            ]),
        // Tokens made before scopes keep doing everything.
        Migration(
            version: 8, name: "admin token scopes",
            statements: [
                "ALTER TABLE admin_tokens ADD COLUMN scope text NOT NULL DEFAULT 'admin'",
                "ALTER TABLE admin_tokens ADD COLUMN ceiling text",
                "ALTER TABLE admin_tokens ADD COLUMN max_key_lifetime_ms bigint",
                "ALTER TABLE admin_tokens ADD COLUMN expires_at_ms bigint",
            ]),
        Migration(
            version: 9, name: "admin token last use",
            statements: ["ALTER TABLE admin_tokens ADD COLUMN last_used_at_ms bigint NOT NULL DEFAULT 0"]),
        // Key and admin-token history outlives the retention of traffic (SQLite's migration 14).
        Migration(
            version: 10, name: "audit history kept apart from traffic",
            statements: [
                "ALTER TABLE audit_links ADD COLUMN history boolean NOT NULL DEFAULT false",
                "ALTER TABLE audit_links ADD COLUMN pruned_from bigint",
                """
                UPDATE audit_links l SET history = true WHERE EXISTS (
                    SELECT 1 FROM audit_events e WHERE e.seq BETWEEN l.first_seq AND l.last_seq AND e.link = l.first_seq
                    AND e.action NOT IN ('api.request', 'admin.permission_denied'))
                """,
                "CREATE INDEX audit_links_traffic ON audit_links (at_ms, position) WHERE NOT history AND pruned_from IS NULL",
            ]),
        // A change's version carries the timeline it was written on (ChangeVersion): after a
        // failover, new changes are numbered above every change of the old timeline, those lost
        // included. Existing versions (below 2^48) stay as they are, below every new one.
        Migration(
            version: 11, name: "change versions carry the timeline",
            statements: [
                """
                CREATE FUNCTION apikeyd_change_version() RETURNS bigint LANGUAGE sql VOLATILE AS $$
                    SELECT (('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint << 48)
                           + nextval('key_changes_version_seq')
                $$
                """,
                "ALTER TABLE key_changes ALTER COLUMN version SET DEFAULT apikeyd_change_version()",
            ]),
        // api.request events as packed batches (APIRequestPacking, the layout SQLite stores): a
        // row, a few TOAST chunks and one index entry per distinct key for up to 2,048 events,
        // instead of a row and three index entries per event. Rows written before stay where they
        // are and read as they did (a page merges both by seq: PostgresKeyStore.auditPage).
        Migration(
            version: 12, name: "api.request events in packed batches",
            statements: [
                // key_ids: the distinct keys of the batch, whose api_request_batch_keys entries go
                // with it (by their primary key) when it is pruned.
                """
                CREATE TABLE api_request_batches (
                    first_seq bigint PRIMARY KEY, last_seq bigint NOT NULL, first_at_ms bigint NOT NULL,
                    last_at_ms bigint NOT NULL, count integer NOT NULL, link bigint NOT NULL,
                    key_ids text[] NOT NULL, events bytea NOT NULL)
                """,
                // lz4 (PostgreSQL 14 and later, when built with it): events/s absorbed 331-344k
                // against pglz's 212-225k and 240-249k uncompressed, in 14 MB per million events
                // against 38 MB and 99 MB (apikeyd-bench inprocess --database-url, fsync on).
                // Where it is missing the default compression stays.
                """
                DO $$ BEGIN
                    ALTER TABLE api_request_batches ALTER COLUMN events SET COMPRESSION lz4;
                EXCEPTION WHEN OTHERS THEN NULL;
                END $$
                """,
                "CREATE INDEX api_request_batches_by_time ON api_request_batches (first_at_ms)",
                """
                CREATE TABLE api_request_batch_keys (
                    key_id text NOT NULL, first_seq bigint NOT NULL, PRIMARY KEY (key_id, first_seq))
                """,
                // Replicas of earlier versions would write events as rows beside the batches: the
                // first thing they read at start (`SELECT version FROM schema_migrations`) now
                // refuses them, by name. The record of migrations moves to apikeyd_schema.
                "ALTER TABLE schema_migrations RENAME TO apikeyd_schema",
                """
                CREATE FUNCTION apikeyd_schema_refusal() RETURNS TABLE (version integer) LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'this database''s apikeyd schema is newer than this apikeyd (it stores api.request events as packed batches since schema 12): run a newer apikeyd on every replica'
                        USING ERRCODE = 'feature_not_supported';
                END $$
                """,
                "CREATE VIEW schema_migrations AS SELECT * FROM apikeyd_schema_refusal()",
            ]),
    ]

    /// The table migrations are recorded in from ``movedRecordVersion`` on (before it,
    /// `schema_migrations`, which now refuses earlier versions of apikeyd).
    static let recordTable = "apikeyd_schema"
    static let movedRecordVersion = 12

    /// Applies every migration not yet recorded, each in its own transaction, holding the
    /// advisory lock; returns the versions it applied.
    @discardableResult
    static func migrate(_ connection: PostgresConnection, nowMS: Int64, logger: Logger) async throws -> [Int] {
        try await connection.query("SELECT pg_advisory_lock(\(lockID))", logger: logger)
        do {
            let applied = try await migrateLocked(connection, nowMS: nowMS, logger: logger)
            try await connection.query("SELECT pg_advisory_unlock(\(lockID))", logger: logger)
            return applied
        } catch {
            _ = try? await connection.query("SELECT pg_advisory_unlock(\(lockID))", logger: logger)
            throw error
        }
    }

    private static func migrateLocked(_ connection: PostgresConnection, nowMS: Int64, logger: Logger) async throws
        -> [Int]
    {
        let moved =
            try await connection.query("SELECT to_regclass(\(recordTable)) IS NOT NULL", logger: logger)
            .decode(Bool.self).first { _ in true } ?? false
        if !moved {
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version integer PRIMARY KEY, name text NOT NULL, applied_at_ms bigint NOT NULL)
                """, logger: logger)
        }
        var done: Set<Int> = []
        for try await version in try await connection.query(
            "SELECT version FROM \(unescaped: moved ? recordTable : "schema_migrations")", logger: logger
        ).decode(Int.self) {
            done.insert(version)
        }
        let known = migrations.last?.version ?? 0
        if let newest = done.max(), newest > known {
            throw StoreError.schemaTooNew(found: newest, known: known)
        }
        var applied: [Int] = []
        for migration in migrations where !done.contains(migration.version) {
            try await connection.withTransaction(logger: logger) { connection in
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                let table = migration.version >= movedRecordVersion ? recordTable : "schema_migrations"
                try await connection.query(
                    """
                    INSERT INTO \(unescaped: table) (version, name, applied_at_ms)
                    VALUES (\(migration.version), \(migration.name), \(nowMS))
                    """, logger: logger)
            }
            applied.append(migration.version)
        }
        return applied
    }
}
