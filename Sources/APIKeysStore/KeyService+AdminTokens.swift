import APIKeysCore

extension KeyService {
    /// Admin tokens are their own kind of secret (prefix `adm_`), stored hashed, never API keys.
    public static let adminTokenFormat = try! SecretFormat(prefix: "adm_")

    /// Creates an admin token named `name` and returns it; it is not kept.
    public func createAdminToken(name: String) throws -> String {
        let name = try KeyRules.validName(name)
        let token = Self.adminTokenFormat.generate()
        let hash = SecretHash(of: token)
        try withAdmin { db in
            try db.statement("INSERT INTO admin_tokens (name, token_hash, created_at_ms) VALUES (?, ?, ?)")
                .bind(.text(name), .blob(hash.digest), .integer(clock.nowMS())).run()
        }
        adminTokens.withLock { $0[hash] = name }
        return token
    }

    /// Revokes the admin token named `name`; false when there is none.
    public func revokeAdminToken(name: String) throws -> Bool {
        let removed = try withAdmin { db in
            try db.statement("DELETE FROM admin_tokens WHERE name = ?").bind(.text(name)).run()
            return db.changes > 0
        }
        if removed { adminTokens.withLock { tokens in tokens = tokens.filter { $0.value != name } } }
        return removed
    }

    /// Names of the admin tokens.
    public func adminTokenNames() throws -> [String] {
        try withAdmin { try $0.statement("SELECT name FROM admin_tokens ORDER BY pk").rows { $0.text(0) } }
    }

    /// The name of the admin token `token`, or nil if it is not a live admin token.
    public func adminTokenName(for token: String) -> String? {
        guard Self.adminTokenFormat.isWellFormed(token) else { return nil }
        let hash = SecretHash(of: token)
        return adminTokens.withLock { $0[hash] }
    }

    func loadAdminTokens(_ db: SQLiteConnection) throws {
        let rows = try db.statement("SELECT name, token_hash FROM admin_tokens").rows { ($0.text(0), $0.blob(1)) }
        adminTokens.withLock { tokens in
            for (name, digest) in rows { if let hash = SecretHash(digest: digest) { tokens[hash] = name } }
        }
    }
}
