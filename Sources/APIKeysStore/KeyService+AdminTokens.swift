import APIKeysCore

extension KeyService {
    /// Admin tokens are their own kind of secret (prefix `adm_`), stored hashed, never API keys.
    public static let adminTokenFormat = try! SecretFormat(prefix: "adm_")

    /// Creates an admin token named `name` and returns it; it is not kept.
    public func createAdminToken(name: String) throws -> String {
        let name = try KeyRules.validName(name)
        let token = Self.adminTokenFormat.generate()
        try withAdmin { db in
            try db.statement("INSERT INTO admin_tokens (name, token_hash, created_at_ms) VALUES (?, ?, ?)")
                .bind(.text(name), .blob(SecretHash(of: token).digest), .integer(clock.nowMS())).run()
        }
        return token
    }

    /// Revokes the admin token named `name`; false when there is none.
    public func revokeAdminToken(name: String) throws -> Bool {
        try withAdmin { db in
            try db.statement("DELETE FROM admin_tokens WHERE name = ?").bind(.text(name)).run()
            return db.changes > 0
        }
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
        guard Self.adminTokenFormat.isWellFormed(token) else { return nil }
        let hash = SecretHash(of: token)
        return try withAdmin { db in
            try db.statement("SELECT name FROM admin_tokens WHERE token_hash = ?").bind(.blob(hash.digest))
                .firstRow { $0.text(0) }
        }
    }
}
