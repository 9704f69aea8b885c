import APIKeysCore

extension KeyService {
    /// Admin tokens are their own kind of secret (prefix `adm_`), stored hashed, never API keys.
    public static let adminTokenFormat = try! SecretFormat(prefix: "adm_")

    /// Creates an admin token named `name` and returns it; it is not kept. The change and its
    /// `admin_token.created` record (by `actor`) share one transaction; see
    /// ``recordPendingAdminEvents()`` for when the record gets its place in the trail.
    public func createAdminToken(name: String, actor: String) throws -> String {
        let name = try KeyRules.validName(name)
        let token = Self.adminTokenFormat.generate()
        try withAdmin { db in
            try db.transaction {
                let now = clock.nowMS()
                try db.statement("INSERT INTO admin_tokens (name, token_hash, created_at_ms) VALUES (?, ?, ?)")
                    .bind(.text(name), .blob(SecretHash(of: token).digest), .integer(now)).run()
                try Self.recordPending(.adminTokenCreated, name: name, actor: actor, at: now, in: db)
            }
        }
        return token
    }

    /// Revokes the admin token named `name`; false when there is none. The change and its
    /// `admin_token.revoked` record (by `actor`) share one transaction.
    public func revokeAdminToken(name: String, actor: String) throws -> Bool {
        try withAdmin { db in
            try db.transaction {
                try db.statement("DELETE FROM admin_tokens WHERE name = ?").bind(.text(name)).run()
                guard db.changes > 0 else { return false }
                try Self.recordPending(.adminTokenRevoked, name: name, actor: actor, at: clock.nowMS(), in: db)
                return true
            }
        }
    }

    /// Gives the admin-token records waiting in the database their place in the audit trail.
    ///
    /// Admin tokens are also created and revoked by `apikeyd admin-token`, a process of its own
    /// beside the running server; only the server numbers audit events (its sequence counter runs
    /// ahead of the database while checks are queued), so such a change is stored as pending in
    /// its own transaction and numbered here: at start, and before every KeyAdmin call
    /// (``adminTokenName(for:)``), so it is listed from the first call after the change. Each
    /// record is stamped with the time it is numbered (times in the trail never go backwards);
    /// its detail says when the change was made.
    public func recordPendingAdminEvents() throws {
        let waiting = try withAdmin { db in
            try db.statement("SELECT EXISTS (SELECT 1 FROM pending_admin_events)").firstRow { $0.int64(0) } == 1
        }
        guard waiting else { return }
        try commit(deadline: .never) { db in
            let pending = try db.statement("SELECT id, at_ms, action, actor, detail FROM pending_admin_events ORDER BY id")
                .rows { row in (row.int64(0), row.int64(1), row.text(2), row.text(3), row.text(4)) }
            let now = clock.nowMS()
            for (_, madeAt, action, actor, detail) in pending {
                guard let action = AuditAction(rawValue: action) else {
                    throw StoreError.corrupt(path: db.path, message: "a pending admin event has action \"\(action)\"")
                }
                try recordAdminEvent(
                    action, actor: actor, detail: "\(detail) at \(Self.describe(madeAt))", at: now, in: db)
            }
            if let last = pending.last?.0 {
                try db.statement("DELETE FROM pending_admin_events WHERE id <= ?").bind(.integer(last)).run()
            }
            return ((), [])
        }
    }

    private static func recordPending(
        _ action: AuditAction, name: String, actor: String, at now: Int64, in db: SQLiteConnection
    ) throws {
        let verb = action == .adminTokenCreated ? "created" : "revoked"
        try db.statement("INSERT INTO pending_admin_events (at_ms, action, actor, detail) VALUES (?, ?, ?, ?)")
            .bind(.integer(now), .text(action.rawValue), .text(actor), .text("admin token \"\(name)\" \(verb)")).run()
    }

    /// Names of the admin tokens, oldest first.
    public func adminTokenNames() throws -> [String] {
        try withAdmin { try $0.statement("SELECT name FROM admin_tokens ORDER BY pk").rows { $0.text(0) } }
    }

    /// The name of the admin token `token`, or nil if it is not a live admin token.
    ///
    /// Read from the database on every call (one indexed lookup; admin calls are few), so that
    /// tokens created or revoked by `apikeyd admin-token` take effect in a running server at once.
    public func adminTokenName(for token: String) throws -> String? {
        try recordPendingAdminEvents()
        guard Self.adminTokenFormat.isWellFormed(token) else { return nil }
        let hash = SecretHash(of: token)
        return try withAdmin { db in
            try db.statement("SELECT name FROM admin_tokens WHERE token_hash = ?").bind(.blob(hash.digest))
                .firstRow { $0.text(0) }
        }
    }
}
