import Foundation
import APIKeysCore

extension KeyService {
    /// A key with its raw secret: the result of create and rotate. The secret is not kept.
    public struct IssuedKey: Sendable, Hashable {
        public var key: KeyRecord
        public var secret: String
    }

    /// What a new key is given.
    public struct NewKey: Sendable, Hashable {
        public var name: String
        public var permissions: [String]
        /// 0 = never.
        public var expiresAtMS: Int64
        /// Networks checks must come from; empty = any.
        public var allowedNetworks: [String]
        /// nil (or 0 requests) = no limit.
        public var rateLimit: KeyRateLimit?
        /// Usage credits: how many checks it may be allowed in all; nil = unlimited.
        public var uses: Int64?

        public init(
            name: String, permissions: [String], expiresAtMS: Int64 = 0, allowedNetworks: [String] = [],
            rateLimit: KeyRateLimit? = nil, uses: Int64? = nil
        ) {
            self.name = name
            self.permissions = permissions
            self.expiresAtMS = expiresAtMS
            self.allowedNetworks = allowedNetworks
            self.rateLimit = rateLimit
            self.uses = uses
        }
    }

    /// Creates a key. Throws ``KeyError`` for an invalid name, permission or expiry.
    public func createKey(
        name: String, permissions: [String], expiresAtMS: Int64 = 0, allowedNetworks: [String] = [],
        rateLimit: KeyRateLimit? = nil, uses: Int64? = nil, actor: AdminActor, deadline: Deadline = .never
    ) async throws -> IssuedKey {
        try await createKeys(
            [
                NewKey(
                    name: name, permissions: permissions, expiresAtMS: expiresAtMS, allowedNetworks: allowedNetworks,
                    rateLimit: rateLimit, uses: uses)
            ],
            actor: actor, deadline: deadline)[0]
    }

    /// Creates keys in one transaction: all of them or, when one is invalid, none.
    public func createKeys(_ requests: [NewKey], actor: AdminActor, deadline: Deadline = .never) async throws
        -> [IssuedKey]
    {
        let now = clock.nowMS()
        try actor.require(.keys, for: "CreateKey")
        let issued = try requests.map { request in
            let name = try KeyRules.validName(request.name)
            let permissions = try catalog.validate(request.permissions)
            let expiry = try KeyRules.validExpiry(request.expiresAtMS, nowMS: now, maxLifetimeMS: maxKeyLifetimeMS)
            try Self.checkFences(of: actor, permissions: permissions, expiresAtMS: .some(expiry), nowMS: now)
            let networks = try KeyRules.validNetworks(request.allowedNetworks)
            let rateLimit = try KeyRules.validRateLimit(request.rateLimit)
            let uses = try request.uses.map { uses throws(KeyError) in try KeyRules.validUses(uses) }
            let secret = format.generate()
            let key = KeyRecord(
                id: KeyRecord.newID(), name: name, hint: format.hint(for: secret), permissions: permissions,
                enabled: true, createdAtMS: now, updatedAtMS: now, expiresAtMS: expiry, allowedNetworks: networks,
                rateLimit: rateLimit, usage: uses.map { UsageGrant(granted: $0, spent: 0) })
            return IssuedKey(key: key, secret: secret)
        }
        return try await commit(reading: nil, by: actor, deadline: deadline) { _ in
            KeyDecision(
                result: issued, writes: issued.map { .insert($0.key, SecretHash(of: $0.secret)) },
                events: issued.map { item in
                    Self.event(
                        .keyCreated, for: item.key, actor: actor.name,
                        detail: "created; expires \(Self.describe(item.key.expiresAtMS))"
                            + (item.key.allowedNetworks.isEmpty
                                ? "" : "; from \(item.key.allowedNetworks.joined(separator: " ")) only")
                            + (item.key.rateLimit.map { "; at most \($0)" } ?? "")
                            + (item.key.usage.map { "; \($0.granted) uses" } ?? ""),
                        permissions: item.key.permissions, at: now)
                })
        }
    }

    /// The key with `id`.
    public func getKey(id: String) async throws -> KeyRecord {
        withLiveUsage(try await store.key(id: id))
    }

    /// `key` with its credits as this server counts them: the stored count lags behind by the
    /// checks still in the audit queue, which are already spent.
    func withLiveUsage(_ key: KeyRecord) -> KeyRecord {
        guard var usage = key.usage, let left = index.creditsLeft(ofKey: key.id) else { return key }
        usage.spent = max(usage.spent, usage.granted - left)
        var key = key
        key.usage = usage
        return key
    }

    /// One page of keys, oldest first; `pageToken` is the previous page's `nextPageToken`.
    public func listKeys(pageSize: Int = 0, pageToken: String? = nil) async throws -> (
        keys: [KeyRecord], nextPageToken: String?
    ) {
        let limit = Self.clampPageSize(pageSize)
        let after = try Self.cursor(from: pageToken) ?? 0
        let rows = try await store.keys(after: after, limit: limit + 1)
        let keys = rows.prefix(limit).map { withLiveUsage($0.key) }
        return (keys, rows.count > limit ? String(rows[limit - 1].position) : nil)
    }

    /// Changes the given fields; nil leaves a field as it is, an expiry of 0 clears it, and so
    /// does a rate limit of 0 requests. `remainingUses` refills the key's usage credits: that many
    /// left from now (the key's checks still in the audit queue are taken from them), -1 for unlimited.
    /// Records `key.updated` for a name, expiry or allowlist change and `key.permissions_changed` for a
    /// permission change (both when both change); a call that changes nothing records nothing.
    public func updateKey(
        id: String, name: String? = nil, expiresAtMS: Int64? = nil, permissions: [String]? = nil,
        allowedNetworks: [String]? = nil, rateLimit: KeyRateLimit? = nil, remainingUses: Int64? = nil,
        actor: AdminActor,
        deadline: Deadline = .never
    ) async throws -> KeyRecord {
        let now = clock.nowMS()
        let newName = try name.map { name throws(KeyError) in try KeyRules.validName(name) }
        let newExpiry = try expiresAtMS.map { expiry throws(KeyError) in
            try KeyRules.validExpiry(expiry, nowMS: now, maxLifetimeMS: maxKeyLifetimeMS)
        }
        let newPermissions = try permissions.map { names throws(KeyError) in try catalog.validate(names) }
        try Self.checkFences(
            of: actor, permissions: newPermissions ?? [], expiresAtMS: newExpiry, nowMS: now)
        let newNetworks = try allowedNetworks.map { networks throws(KeyError) in try KeyRules.validNetworks(networks) }
        let newRateLimit = try rateLimit.map { limit throws(KeyError) in try KeyRules.validRateLimit(limit) }
        let newUses = try remainingUses.map { uses throws(KeyError) -> Int64? in
            uses == -1 ? nil : try KeyRules.validUses(uses)
        }
        return try await mutate(id: id, actor: actor, at: now, deadline: deadline) { stored in
            var key = stored.key
            var changes: [String] = []
            // Bytes, not `!=`: a rename to the same text in other bytes is stored as sent.
            if let newName, !newName.hasSameBytes(as: key.name) {
                changes.append("name \"\(key.name)\" → \"\(newName)\"")
                key.name = newName
            }
            if let newExpiry, newExpiry != key.expiresAtMS {
                changes.append("expiry \(Self.describe(key.expiresAtMS)) → \(Self.describe(newExpiry))")
                key.expiresAtMS = newExpiry
            }
            if let newNetworks, newNetworks != key.allowedNetworks {
                changes.append(
                    "allowed networks [\(key.allowedNetworks.joined(separator: " "))] → [\(newNetworks.joined(separator: " "))]"
                )
                key.allowedNetworks = newNetworks
            }
            if let newRateLimit, newRateLimit != key.rateLimit {
                changes.append(
                    "rate limit \(key.rateLimit.map(\.description) ?? "none") → \(newRateLimit.map(\.description) ?? "none")"
                )
                key.rateLimit = newRateLimit
            }
            // Unlimited made unlimited changes nothing; a grant, even of the same number, refills.
            if let newUses, newUses != nil || key.usage != nil {
                // A grant counts from what the store has spent (the audit writer adds to that).
                let spent = key.usage?.spent ?? 0
                let before = key.usage.map { "\($0.remaining) left" } ?? "unlimited"
                changes.append("uses \(before) → \(newUses.map { "\($0) left" } ?? "unlimited")")
                key.usage = newUses.map { UsageGrant(granted: spent + $0, spent: spent) }
            }
            var events: [(AuditAction, String, [String])] = []
            if !changes.isEmpty { events.append((.keyUpdated, changes.joined(separator: "; "), [])) }
            if let newPermissions, newPermissions != key.permissions {
                let detail =
                    "permissions [\(key.permissions.joined(separator: " "))] → [\(newPermissions.joined(separator: " "))]"
                events.append((.keyPermissionsChanged, detail, newPermissions))
                key.permissions = newPermissions
            }
            guard !events.isEmpty else { return (key, [], nil) }
            key.updatedAtMS = now
            let grace = Self.graceHash(of: stored, keptIn: &key, at: now)
            return (key, events, .update(key, hash: stored.hash, graceHash: grace, from: stored))
        }
    }

    /// Enables or disables the key; a disabled key is refused from the moment this returns, and
    /// a rotation's grace ends with it (the replaced secret stays refused when it is enabled again).
    public func setEnabled(id: String, enabled: Bool, actor: AdminActor, deadline: Deadline = .never) async throws
        -> KeyRecord
    {
        let now = clock.nowMS()
        return try await mutate(id: id, actor: actor, at: now, deadline: deadline) { stored in
            var key = stored.key
            guard key.enabled != enabled else { return (key, [], nil) }
            key.enabled = enabled
            key.updatedAtMS = now
            let grace = enabled ? Self.graceHash(of: stored, keptIn: &key, at: now) : nil
            if !enabled { key.graceEndsAtMS = nil }
            return (
                key, [(enabled ? .keyEnabled : .keyDisabled, enabled ? "enabled" : "disabled", [])],
                .update(key, hash: stored.hash, graceHash: grace, from: stored)
            )
        }
    }

    /// Gives the key a new secret, keeping its id, name, permissions and settings. With a
    /// `graceSeconds` of 0 (the default) the old secret is refused from the moment this returns;
    /// else it is accepted for that long more (at most ``KeyRules/maxRotationGraceSeconds``),
    /// and the secret of an earlier rotation's grace, if any, is refused at once.
    public func rotateKey(id: String, graceSeconds: Int64 = 0, actor: AdminActor, deadline: Deadline = .never)
        async throws -> IssuedKey
    {
        let now = clock.nowMS()
        let graceMS = try KeyRules.validGrace(seconds: graceSeconds)
        let secret = format.generate()
        let hash = SecretHash(of: secret)
        let hint = format.hint(for: secret)
        let key = try await mutate(id: id, actor: actor, at: now, deadline: deadline) { stored in
            var key = stored.key
            let oldHint = key.hint
            key.hint = hint
            key.rotatedAtMS = now
            key.updatedAtMS = now
            // A disabled key has no grace: its old secret would only come back with it.
            let keepsOld = graceMS > 0 && key.enabled
            key.graceEndsAtMS = keepsOld ? now + graceMS : nil
            let detail =
                "secret \(oldHint) replaced by \(key.hint)"
                + (keepsOld ? "; \(oldHint) accepted until \(Self.describe(key.graceEndsAtMS))" : "")
            return (
                key, [(.keyRotated, detail, [])],
                .update(key, hash: hash, graceHash: keepsOld ? stored.hash : nil, from: stored)
            )
        }
        return IssuedKey(key: key, secret: secret)
    }

    /// Deletes the key for good, every secret of it refused from the moment this returns. Its
    /// audit events stay.
    public func deleteKey(id: String, actor: AdminActor, deadline: Deadline = .never) async throws {
        try await mutate(id: id, actor: actor, at: clock.nowMS(), deadline: deadline) { stored in
            (stored.key, [(.keyDeleted, "deleted", [])], .delete(stored.key, hashes: stored.hashes))
        }
    }

    /// The grace secret of `stored` that a change at `now` keeps: nil once its grace is over,
    /// which `key` then forgets too.
    static func graceHash(of stored: StoredKey, keptIn key: inout KeyRecord, at now: Int64) -> SecretHash? {
        guard let grace = stored.liveGraceHash(at: now) else {
            key.graceEndsAtMS = nil
            return nil
        }
        return grace
    }

    /// Runs `change` on the stored key `id` and writes what it returns with its audit events
    /// (stamped `now`, the time the caller also wrote into the key) in one transaction; returns
    /// the key as written, with this server's count of its credits.
    @discardableResult
    private func mutate(
        id: String, actor: AdminActor, at now: Int64, deadline: Deadline,
        _ change: @escaping @Sendable (StoredKey) throws -> (KeyRecord, [(AuditAction, String, [String])], KeyWrite?)
    ) async throws -> KeyRecord {
        try actor.require(.keys, for: "changing a key")
        let key = try await commit(reading: id, by: actor, deadline: deadline) { stored in
            guard let stored else { throw KeyError.keyNotFound(id: id) }
            // A key holding a permission outside the token's ceiling is not the token's to touch.
            try Self.checkFences(of: actor, permissions: stored.key.permissions, expiresAtMS: nil, nowMS: now)
            let (key, events, write) = try change(stored)
            return KeyDecision(
                result: key, writes: write.map { [$0] } ?? [],
                events: events.map { action, detail, permissions in
                    Self.event(action, for: key, actor: actor.name, detail: detail, permissions: permissions, at: now)
                })
        }
        return withLiveUsage(key)
    }

    /// Throws ``KeyError/permissionDenied(_:)`` when `actor`'s grant does not let it give (or touch)
    /// a key holding `permissions`, or give one the expiry in `expiresAtMS` (nil: no expiry is
    /// being set; `.some(nil)`: never).
    static func checkFences(of actor: AdminActor, permissions: [String], expiresAtMS: Int64??, nowMS: Int64)
        throws(KeyError)
    {
        guard let grant = actor.grant else { return }
        if let why = grant.refusal(forPermissions: permissions) { throw KeyError.permissionDenied(why) }
        if let expiry = expiresAtMS, let why = grant.refusal(forExpiry: expiry, nowMS: nowMS) {
            throw KeyError.permissionDenied(why)
        }
    }

    /// ``KeyStore/commit(reading:authorizedBy:deadline:_:)`` as `actor`: a token the store finds
    /// revoked is forgotten here too, and one that expired since it authenticated commits nothing
    /// (its expiry is checked again inside the transaction, where the store checks revocation).
    func commit<R: Sendable>(
        reading keyID: String?, by actor: AdminActor, deadline: Deadline,
        _ decide: @escaping @Sendable (StoredKey?) throws -> KeyDecision<R>
    ) async throws -> R {
        let clock = clock
        let decideWhileValid: @Sendable (StoredKey?) throws -> KeyDecision<R> = { stored in
            if actor.grant?.isExpired(atMS: clock.nowMS()) == true { throw KeyError.adminTokenNotValid }
            return try decide(stored)
        }
        do {
            return try await store.commit(
                reading: keyID, authorizedBy: actor.token, deadline: deadline, decideWhileValid)
        } catch let error as KeyError where error.code == .adminTokenNotValid {
            if let token = actor.token { _ = knownAdminTokens.withLock { $0.removeValue(forKey: token) } }
            throw error
        }
    }

    /// An admin event about `key` (numbered by the store when it is written).
    static func event(
        _ action: AuditAction, for key: KeyRecord? = nil, actor: String, detail: String, permissions: [String] = [],
        at now: Int64
    ) -> AuditRecord {
        AuditRecord(
            atMS: now, action: action, keyID: key?.id ?? "", keyName: key?.name ?? "", actor: actor, detail: detail,
            permissions: permissions)
    }

    /// An expiry in words for audit details: an ISO 8601 UTC time, or `never`.
    package static func describe(_ expiry: Int64?) -> String {
        guard let expiry else { return "never" }
        return Date(timeIntervalSince1970: Double(expiry) / 1000).formatted(.iso8601)
    }
}
