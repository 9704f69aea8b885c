import APIKeysCore

extension KeyService {
    /// Admin tokens are their own kind of secret (prefix `adm_`), stored hashed, never API keys.
    public static let adminTokenFormat = try! SecretFormat(prefix: "adm_")

    /// Creates an admin token named `name` and returns it; it is not kept. The change and its
    /// `admin_token.created` record (by `actor`) share one transaction (on SQLite, the record
    /// gets its place in the trail when the server next numbers it: ``prepareToServe()``).
    public func createAdminToken(name: String, actor: String) async throws -> String {
        let token = Self.adminTokenFormat.generate()
        try await createAdminToken(name: name, token: token, actor: actor)
        return token
    }

    /// ``createAdminToken(name:actor:)`` with a token made by the caller (who can then tell, after
    /// an error of unknown outcome, whether it was stored: ``adminTokenName(for:)``).
    package func createAdminToken(name: String, token: String, actor: String) async throws {
        let name = try KeyRules.validName(name)
        try await store.createAdminToken(
            name: name, hash: SecretHash(of: token),
            event: Self.event(
                .adminTokenCreated, actor: actor, detail: "admin token \"\(name)\" created", at: clock.nowMS()))
    }

    /// Revokes the admin token named `name`; false when there is none. The change and its
    /// `admin_token.revoked` record (by `actor`) share one transaction.
    public func revokeAdminToken(name: String, actor: String) async throws -> Bool {
        try await store.revokeAdminToken(
            name: name,
            event: Self.event(
                .adminTokenRevoked, actor: actor, detail: "admin token \"\(name)\" revoked", at: clock.nowMS()))
    }

    /// Names of the admin tokens, oldest first.
    public func adminTokenNames() async throws -> [String] {
        try await store.adminTokenNames()
    }

    /// The name of the admin token `token`, or nil if it is not a live admin token.
    ///
    /// Read from the store on every call (one indexed lookup), so that tokens created or revoked
    /// by `apikeyd admin-token`, or on another replica, take effect at once.
    public func adminTokenName(for token: String) async throws -> String? {
        try await authenticate(adminToken: token, recheckedAtCommit: false)?.name
    }

    /// The actor of a KeyAdmin call presenting `token`, or nil if it is not a live admin token.
    ///
    /// `recheckedAtCommit`: the call is a key change made as the returned actor, whose commit
    /// checks the token again (``AdminActor/token``); a token already seen valid is then answered
    /// from memory, without a round trip to the store. Any other call reads the store.
    public func authenticate(adminToken token: String, recheckedAtCommit: Bool) async throws -> AdminActor? {
        guard Self.adminTokenFormat.isWellFormed(token) else {
            try await store.recordOfflineAdminChanges()
            return nil
        }
        let hash = SecretHash(of: token)
        if recheckedAtCommit, let name = knownAdminTokens.withLock({ $0[hash] }) {
            return AdminActor(name: name, token: hash)
        }
        guard let name = try await store.adminTokenName(hash: hash) else { return nil }
        knownAdminTokens.withLock { $0[hash] = name }
        return AdminActor(name: name, token: hash)
    }
}
