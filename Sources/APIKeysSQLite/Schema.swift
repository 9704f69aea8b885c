import APIKeysCore
import APIKeysStore

/// The database schema as named, recorded migration steps, applied in order at open.
package enum Schema {
    struct Migration {
        let version: Int
        let name: String
        let sql: String
    }

    static let migrations: [Migration] = [
        Migration(
            version: 1, name: "keys and audit trail",
            sql: """
                CREATE TABLE keys (
                    pk INTEGER PRIMARY KEY,
                    id TEXT NOT NULL UNIQUE,
                    name TEXT NOT NULL,
                    secret_hash BLOB NOT NULL UNIQUE,
                    hint TEXT NOT NULL,
                    permissions TEXT NOT NULL,
                    enabled INTEGER NOT NULL,
                    created_at_ms INTEGER NOT NULL,
                    updated_at_ms INTEGER NOT NULL,
                    expires_at_ms INTEGER,
                    last_used_at_ms INTEGER,
                    rotated_at_ms INTEGER
                );
                CREATE TABLE audit_events (
                    seq INTEGER PRIMARY KEY,
                    at_ms INTEGER NOT NULL,
                    action TEXT NOT NULL,
                    key_id TEXT NOT NULL,
                    key_name TEXT NOT NULL,
                    actor TEXT NOT NULL,
                    detail TEXT NOT NULL,
                    denial INTEGER,
                    permissions TEXT NOT NULL,
                    resource TEXT NOT NULL,
                    client_address TEXT NOT NULL
                );
                CREATE INDEX audit_events_by_key ON audit_events (key_id, seq);
                CREATE INDEX audit_events_by_action ON audit_events (action, seq);
                CREATE INDEX audit_events_by_time ON audit_events (at_ms);
                """),
        Migration(
            version: 2, name: "admin tokens",
            sql: """
                CREATE TABLE admin_tokens (
                    pk INTEGER PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    token_hash BLOB NOT NULL UNIQUE,
                    created_at_ms INTEGER NOT NULL
                );
                """),
        // api.request rows are nearly all rows: indexing them by action costs every check a
        // B-tree insert and buys nothing (a newest-first scan finds them at once). Only the rare
        // admin actions keep an action index.
        Migration(
            version: 3, name: "index admin actions only",
            sql: """
                DROP INDEX audit_events_by_action;
                CREATE INDEX audit_events_by_admin_action ON audit_events (action, seq) WHERE action != 'api.request';
                """),
        // api.request events move to one row per committed batch (see APIRequestBatchTable);
        // rows already in audit_events stay where they are and are still listed.
        Migration(
            version: 4, name: "api.request events in batches",
            sql: """
                CREATE TABLE api_request_batches (
                    first_seq INTEGER PRIMARY KEY,
                    last_seq INTEGER NOT NULL,
                    first_at_ms INTEGER NOT NULL,
                    last_at_ms INTEGER NOT NULL,
                    count INTEGER NOT NULL,
                    events BLOB NOT NULL
                );
                CREATE INDEX api_request_batches_by_time ON api_request_batches (first_at_ms, first_seq);
                CREATE TABLE api_request_batch_keys (
                    key_id TEXT NOT NULL,
                    first_seq INTEGER NOT NULL,
                    PRIMARY KEY (key_id, first_seq)
                ) WITHOUT ROWID;
                """),
        // Retention prunes the oldest batches, a range of first_seq: without this index, deleting
        // their key entries would scan the whole (key_id, first_seq) table.
        Migration(
            version: 5, name: "prune batch keys by seq",
            sql: "CREATE INDEX api_request_batch_keys_by_seq ON api_request_batch_keys (first_seq);"),
        // Admin-token changes made by `apikeyd admin-token` in another process than the server's:
        // written here in the change's own transaction, numbered into the trail by the server.
        Migration(
            version: 6, name: "admin token events awaiting their number",
            sql: """
                CREATE TABLE pending_admin_events (
                    id INTEGER PRIMARY KEY,
                    at_ms INTEGER NOT NULL,
                    action TEXT NOT NULL,
                    actor TEXT NOT NULL,
                    detail TEXT NOT NULL
                );
                """),
        // A key's allowlist: normalised CIDR networks joined by spaces; '' = any address.
        Migration(
            version: 7, name: "key allowlists",
            sql: "ALTER TABLE keys ADD COLUMN allowed_networks TEXT NOT NULL DEFAULT '';"),
        // A rotation with a grace period: the replaced secret's hash, accepted until grace_ends_at_ms.
        Migration(
            version: 8, name: "rotation grace",
            sql: """
                ALTER TABLE keys ADD COLUMN grace_secret_hash BLOB;
                ALTER TABLE keys ADD COLUMN grace_ends_at_ms INTEGER;
                """),
        // A key's rate limit as `requests/period seconds/burst` (KeyRateLimit.stored); '' = none.
        Migration(
            version: 9, name: "rate limits",
            sql: "ALTER TABLE keys ADD COLUMN rate_limit TEXT NOT NULL DEFAULT '';"),
        // Usage credits: granted in all (NULL = unlimited), and spent as the audit writer counts them.
        Migration(
            version: 10, name: "usage credits",
            sql: """
                ALTER TABLE keys ADD COLUMN uses_granted INTEGER;
                ALTER TABLE keys ADD COLUMN uses_spent INTEGER NOT NULL DEFAULT 0;
                """),
        // The audit trail's hash chain (AuditChain): each stored event and batch names its link
        // (the link's first seq; NULL for events stored before this version, outside the chain);
        // audit_chain holds the head and the anchor (the last link pruned).
        Migration(
            version: 11, name: "audit hash chain",
            sql: """
                ALTER TABLE audit_events ADD COLUMN link INTEGER;
                ALTER TABLE api_request_batches ADD COLUMN link INTEGER;
                CREATE TABLE audit_links (
                    position INTEGER PRIMARY KEY,
                    first_seq INTEGER NOT NULL,
                    last_seq INTEGER NOT NULL,
                    at_ms INTEGER NOT NULL,
                    count INTEGER NOT NULL,
                    hash BLOB NOT NULL
                );
                CREATE TABLE audit_chain (
                    one INTEGER PRIMARY KEY CHECK (one = 1),
                    head_position INTEGER NOT NULL,
                    head_hash BLOB NOT NULL,
                    anchor_position INTEGER NOT NULL,
                    anchor_hash BLOB NOT NULL
                );
                INSERT INTO audit_chain VALUES (1, 0, zeroblob(32), 0, zeroblob(32));
                """),
        // Tokens made before scopes keep doing everything.
        Migration(
            version: 12, name: "admin token scopes",
            sql: """
                ALTER TABLE admin_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin';
                ALTER TABLE admin_tokens ADD COLUMN ceiling TEXT;
                ALTER TABLE admin_tokens ADD COLUMN max_key_lifetime_ms INTEGER;
                ALTER TABLE admin_tokens ADD COLUMN expires_at_ms INTEGER;
                """),
        Migration(
            version: 13, name: "admin token last use",
            sql: "ALTER TABLE admin_tokens ADD COLUMN last_used_at_ms INTEGER NOT NULL DEFAULT 0;"),
        // Key and admin-token history outlives the retention of traffic: a link says whether it
        // holds history, and a traffic link emptied by retention before older history is a gap
        // (pruned_from: the first position of the run it stands for).
        Migration(
            version: 14, name: "audit history kept apart from traffic",
            sql: """
                ALTER TABLE audit_links ADD COLUMN history INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE audit_links ADD COLUMN pruned_from INTEGER;
                UPDATE audit_links SET history = 1 WHERE EXISTS (
                    SELECT 1 FROM audit_events e
                    WHERE e.seq BETWEEN audit_links.first_seq AND audit_links.last_seq AND e.link = audit_links.first_seq
                    AND e.action NOT IN ('api.request', 'admin.permission_denied'));
                CREATE INDEX audit_links_traffic ON audit_links (at_ms, position) WHERE history = 0 AND pruned_from IS NULL;
                """),
    ]

    /// Applies every migration not yet recorded in `schema_migrations`, each in its own transaction.
    static func migrate(_ db: SQLiteConnection, nowMS: Int64) throws {
        // Pruned audit pages go back to the file system (PRAGMA incremental_vacuum after each
        // prune). The setting only takes hold through a VACUUM: instant on a new database, once
        // (a full rewrite) on one made before retention existed.
        if try db.statement("PRAGMA auto_vacuum").firstRow({ $0.int64(0) }) != 2 {
            try db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            try db.execute("VACUUM")
        }
        try db.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)
            """)
        let applied = Set(try db.statement("SELECT version FROM schema_migrations").rows { $0.int64(0) })
        // A database a later version migrated: this one could write what that one reads differently.
        let known = migrations.last?.version ?? 0
        if let newest = applied.max(), newest > Int64(known) {
            throw StoreError.schemaTooNew(found: Int(newest), known: known)
        }
        for migration in migrations where !applied.contains(Int64(migration.version)) {
            try db.transaction {
                try db.execute(migration.sql)
                try db.statement("INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)")
                    .bind(.integer(Int64(migration.version)), .text(migration.name), .integer(nowMS)).run()
            }
        }
    }
}
