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
            // Any admin call numbers the changes made offline, one call at a time: a call that
            // finds one under way leaves it to that one and the calls after (its answer is the same).
            if recordingOfflineAdminChanges.compareExchange(expected: false, desired: true, ordering: .acquiring)
                .exchanged
            {
                defer { recordingOfflineAdminChanges.store(false, ordering: .releasing) }
                try await store.recordOfflineAdminChanges()
            }
            return nil
        }
        let hash = SecretHash(of: token)
        var stored = recheckedAtCommit ? knownAdminTokens.withLock({ $0[hash] }) : nil
        if stored == nil {
            stored = try await readAdminToken(hash)
            if let stored { knownAdminTokens.withLock { $0[hash] = stored } }
        }
        let now = clock.nowMS()
        guard let stored, !stored.grant.isExpired(atMS: now) else {
            // Revoked (here, offline or on another replica) or expired: no longer seen valid.
            knownAdminTokens.withLock { _ = $0.removeValue(forKey: hash) }
            return nil
        }
        await noteAdminTokenUse(hash, atMS: now)
        return AdminActor(name: stored.name, token: hash, grant: stored.grant)
    }

    /// The hash of `token` when it is an admin token seen valid (live when the server started,
    /// ``prepareToServe()``, or found valid by a call since) and not since found revoked or
    /// expired; else nil. From memory (one hash, one lookup), no store read. Not authentication
    /// (a token revoked elsewhere stays seen valid until a call presents it): it tells callers
    /// already verified from anyone else, as the admin API's rate does.
    public func knownAdminTokenHash(_ token: String) -> SecretHash? {
        guard Self.adminTokenFormat.isWellFormed(token) else { return nil }
        let hash = SecretHash(of: token)
        return knownAdminTokens.withLock { $0[hash] != nil } ? hash : nil
    }

    /// Tokens not seen valid whose reads may wait for the store at once; a call presenting yet
    /// another is refused with ``StoreError/Code/overloaded``. Anyone can make up a well-formed
    /// token, and each read waits its turn for the store's admin connection: unbounded, a flood
    /// of them queued without limit, in memory and in time, ahead of operators' calls.
    public static let maxUnknownAdminTokenReads = 32

    /// Calls refused since start because ``maxUnknownAdminTokenReads`` reads of tokens not seen
    /// valid were under way (a flood of made-up tokens, most likely).
    public var refusedAdminTokenReads: Int { refusedAdminTokenReadCount.load(ordering: .relaxed) }

    /// The stored token with `hash`, read from the store. A token seen valid
    /// (``knownAdminTokens``) is read at once, so that an operator is not refused during a flood
    /// of made-up tokens. Any other is read once for all the calls presenting it meanwhile (a
    /// client's first burst of pipelined calls, or a flood repeating one made-up token), at most
    /// ``maxUnknownAdminTokenReads`` tokens at once.
    func readAdminToken(_ hash: SecretHash) async throws -> AdminTokenInfo? {
        if knownAdminTokens.withLock({ $0[hash] != nil }) { return try await store.adminToken(hash: hash) }
        // The first caller reads, in its own task (no hop to another executor); the others wait
        // for its answer.
        let role = try await withCheckedThrowingContinuation { (waiting: UnknownTokenRead.Waiter) in
            let answer: Result<UnknownTokenRead.Role, any Error>? = unknownAdminTokenReads.withLock { reads in
                if reads[hash] != nil {
                    reads[hash]!.append(waiting)
                    return nil
                }
                guard reads.count < Self.maxUnknownAdminTokenReads else {
                    refusedAdminTokenReadCount.add(1, ordering: .relaxed)
                    return .failure(
                        StoreError(
                            code: .overloaded,
                            description: "reads of \(Self.maxUnknownAdminTokenReads) unknown admin tokens under way"))
                }
                reads[hash] = []
                return .success(.reader)
            }
            if let answer { waiting.resume(with: answer) }
        }
        guard case .reader = role else {
            // A read begun before this call found the token: read it again, so that a revocation
            // that returned in between holds. (One that found none is right: only the token's
            // holder can present it, and only once its creation has returned.)
            guard case .joined(let found) = role, found != nil else { return nil }
            return try await store.adminToken(hash: hash)
        }
        let read: Result<AdminTokenInfo?, any Error>
        do { read = .success(try await store.adminToken(hash: hash)) } catch { read = .failure(error) }
        let waiters = unknownAdminTokenReads.withLock { $0.removeValue(forKey: hash) } ?? []
        for waiter in waiters { waiter.resume(with: read.map(UnknownTokenRead.Role.joined)) }
        return try read.get()
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

/// A read of an admin token not seen valid, shared by the calls presenting it meanwhile
/// (``KeyService/readAdminToken(_:)``).
enum UnknownTokenRead {
    /// What a call presenting the token does: read it, or take the read of the call before.
    enum Role: Sendable {
        case reader
        case joined(AdminTokenInfo?)
    }
    typealias Waiter = CheckedContinuation<Role, any Error>
}
