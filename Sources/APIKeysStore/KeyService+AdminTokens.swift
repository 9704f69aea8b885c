import APIKeysCore
import Synchronization

extension KeyService {
    /// Admin tokens are their own kind of secret (prefix `adm_`), stored hashed, never API keys.
    public static let adminTokenFormat = try! SecretFormat(prefix: "adm_")

    /// Creates an admin token named `name` with `grant` (everything, by default) and returns its
    /// secret; only its hash is kept. `actor` needs scope `admin` and cannot give more than its
    /// own grant holds. The change and its `admin_token.created` record (by `actor`) share one
    /// transaction (on SQLite, the record gets its place in the trail when the server next
    /// numbers it: ``prepareToServe()``).
    public func createAdminToken(name: String, grant: AdminGrant = .full, actor: AdminActor) async throws -> String {
        try await issueAdminToken(name: name, grant: grant, actor: actor).secret
    }

    /// ``createAdminToken(name:grant:actor:)``, answering the token as stored with its secret.
    public func issueAdminToken(name: String, grant: AdminGrant = .full, actor: AdminActor) async throws -> (
        token: AdminTokenInfo, secret: String
    ) {
        let secret = Self.adminTokenFormat.generate()
        let token = try await createAdminToken(name: name, token: secret, grant: grant, actor: actor)
        return (token, secret)
    }

    /// ``createAdminToken(name:grant:actor:)`` with a token made by the caller (who can then tell,
    /// after an error of unknown outcome, whether it was stored: ``adminTokenName(for:)``).
    @discardableResult
    package func createAdminToken(name: String, token: String, grant: AdminGrant = .full, actor: AdminActor)
        async throws -> AdminTokenInfo
    {
        try actor.require(.admin, for: "CreateAdminToken")
        let name = try KeyRules.validName(name)
        let now = clock.nowMS()
        let grant = try validGrant(grant, nowMS: now)
        if let why = actor.grant?.refusal(toGrant: grant) { throw KeyError.permissionDenied(why) }
        // Refused before the insert would trip the store's unique name (a storage error). A
        // create racing this one with the same name still fails there, changing nothing.
        if try await store.adminTokens().contains(where: { $0.name == name }) {
            throw KeyError(
                code: .adminTokenNameTaken, field: "name", description: "an admin token named \"\(name)\" exists")
        }
        try await store.createAdminToken(
            name: name, hash: SecretHash(of: token), grant: grant,
            event: Self.event(
                .adminTokenCreated, actor: actor.name,
                detail: "admin token \"\(name)\" created with \(grant.summary.joined(separator: "; "))",
                at: now))
        return AdminTokenInfo(name: name, grant: grant, createdAtMS: now)
    }

    /// Revokes the admin token named `name`; false when there is none. `actor` needs scope
    /// `admin`. The change and its `admin_token.revoked` record (by `actor`) share one transaction;
    /// from the moment this returns, no change made with the token commits, on any replica.
    public func revokeAdminToken(name: String, actor: AdminActor) async throws -> Bool {
        try actor.require(.admin, for: "RevokeAdminToken")
        return try await store.revokeAdminToken(
            name: name,
            event: Self.event(
                .adminTokenRevoked, actor: actor.name, detail: "admin token \"\(name)\" revoked", at: clock.nowMS()))
    }

    /// The admin tokens, oldest first.
    public func adminTokens() async throws -> [AdminTokenInfo] {
        try await store.adminTokens()
    }

    /// Names of the admin tokens, oldest first.
    public func adminTokenNames() async throws -> [String] {
        try await adminTokens().map(\.name)
    }

    /// The name of the admin token `token`, or nil if it is not a live admin token.
    ///
    /// Read from the store on every call (one indexed lookup), so that tokens created or revoked
    /// by `apikeyd admin-token`, or on another replica, take effect at once.
    public func adminTokenName(for token: String) async throws -> String? {
        try await authenticate(adminToken: token, recheckedAtCommit: false)?.name
    }

    /// The actor of a KeyAdmin call presenting `token`, or nil if it is not a live admin token
    /// (unknown, revoked or expired).
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
        var stored = recheckedAtCommit ? knownAdminTokens.withLock({ $0[hash] }) : nil
        if stored == nil {
            guard let found = try await readAdminToken(hash) else { return nil }
            knownAdminTokens.withLock { $0[hash] = found }
            stored = found
        }
        let now = clock.nowMS()
        guard let stored, !stored.grant.isExpired(atMS: now) else { return nil }
        await noteAdminTokenUse(hash, atMS: now)
        return AdminActor(name: stored.name, token: hash, grant: stored.grant)
    }

    /// Reads of admin tokens not seen valid that may wait for the store at once; more are refused
    /// with ``StoreError/Code/overloaded``. A caller that presents a made-up token (an unknown
    /// admin call, a leak report) needs no secret, and each read waits its turn for the store's
    /// admin connection: unbounded, a flood of them queued without limit, in memory and in time,
    /// ahead of operators' calls.
    public static let maxUnknownAdminTokenReads = 32

    /// The stored token with `hash`: read from the store, at most ``maxUnknownAdminTokenReads``
    /// at once unless the token was seen valid (``knownAdminTokens``), so that an operator's call
    /// is not refused during a flood of made-up tokens.
    func readAdminToken(_ hash: SecretHash) async throws -> AdminTokenInfo? {
        if knownAdminTokens.withLock({ $0[hash] != nil }) { return try await store.adminToken(hash: hash) }
        guard unknownAdminTokenReads.add(1, ordering: .relaxed).newValue <= Self.maxUnknownAdminTokenReads else {
            unknownAdminTokenReads.subtract(1, ordering: .relaxed)
            throw StoreError(
                code: .overloaded,
                description: "more than \(Self.maxUnknownAdminTokenReads) reads of unknown admin tokens under way")
        }
        defer { unknownAdminTokenReads.subtract(1, ordering: .relaxed) }
        return try await store.adminToken(hash: hash)
    }

    /// How precisely an admin token's last use is kept: written at most once a minute per token
    /// and server, so that admin calls do not each cost a write.
    public static let adminTokenUseResolutionMS: Int64 = 60_000

    /// Writes the token's last use when this server has not written it for a minute. A failed
    /// write is only logged: the call it belongs to goes on (the next call tries again).
    private func noteAdminTokenUse(_ hash: SecretHash, atMS now: Int64) async {
        let due = adminTokenUses.withLock { uses in
            guard now - (uses[hash] ?? .min / 2) >= Self.adminTokenUseResolutionMS else { return false }
            uses[hash] = now
            return true
        }
        guard due else { return }
        do {
            try await store.recordAdminTokenUse(hash: hash, atMS: now)
        } catch {
            adminTokenUses.withLock { $0[hash] = nil }
            logger.warning("admin token use not recorded", metadata: ["error": "\(error)"])
        }
    }

    /// `grant` as stored: its ceiling's permissions from the catalog, its limits positive, its
    /// expiry in the future.
    private func validGrant(_ grant: AdminGrant, nowMS: Int64) throws(KeyError) -> AdminGrant {
        var grant = grant
        if let ceiling = grant.ceiling {
            grant.ceiling = ceiling.isEmpty ? nil : Set(try catalog.validate(Array(ceiling)))
        }
        if let lifetime = grant.maxKeyLifetimeMS, lifetime <= 0 {
            throw KeyError(
                code: .lifetimeBeyondPolicy, field: "max_key_lifetime_ms",
                description: "max_key_lifetime_ms must be positive, or 0 for none")
        }
        if let expiry = grant.expiresAtMS, expiry <= nowMS {
            throw KeyError(
                code: .expiryNotInFuture, field: "expires_at_ms", description: "expires_at_ms must be in the future")
        }
        return grant
    }
}
