import Synchronization

/// The in-memory map from secret hash to key state that answers every check without storage.
///
/// The store loads it at start and updates it after each mutation commits, before the mutation
/// returns, so a rotated, disabled or deleted key is refused from that moment on.
///
/// Kept small so that a million keys fit in well under 300 MB: a key's permissions are a bit
/// mask over the catalog, and the table is keyed by the first 128 bits of the SHA-256 (finding
/// another secret with the same 128-bit prefix is a 2^128 search; the database keeps all 256 bits).
public final class KeyIndex: Sendable {
    /// The catalog the masks refer to.
    public let catalog: PermissionCatalog
    private let byHash: Mutex<Entries>

    /// The table, and the meters (token bucket, usage credits) of the keys that have any, by key
    /// id: one set per key, whichever of its secrets a check presents, kept across changes of the
    /// key (a new rate limit starts a new bucket; a new grant tops up the credits).
    private struct Entries {
        var states: [Slot: KeyCheckState]
        var meters: [String: Meters] = [:]
        /// Entries of grace secrets among `states` (so that keys are counted once).
        var graceSecrets = 0

        struct Meters {
            var bucket: RateBucket?
            var credits: UsageCredits?
        }

        /// Puts `key` under `hash`, with its key's meters; true when it has any.
        @discardableResult
        mutating func put(_ key: KeyCheckState, at hash: SecretHash) -> Bool {
            var key = key
            let metered = key.rateLimit != nil || key.usage != nil
            if metered {
                var kept = meters[key.id] ?? Meters()
                if let limit = key.rateLimit {
                    if kept.bucket?.limit != limit { kept.bucket = RateBucket(limit: limit) }
                } else {
                    kept.bucket = nil
                }
                if let usage = key.usage {
                    if let credits = kept.credits {
                        credits.grant(usage.granted)
                        credits.noteStored(spent: usage.spent)
                    } else {
                        kept.credits = UsageCredits(granted: usage.granted, spent: usage.spent)
                    }
                } else {
                    kept.credits = nil
                }
                meters[key.id] = kept
                key = key.withMeters(bucket: kept.bucket, credits: kept.credits)
            } else if !meters.isEmpty {
                meters[key.id] = nil
            }
            if key.isGraceSecret { graceSecrets += 1 }
            if let replaced = states.updateValue(key, forKey: Slot(hash)), replaced.isGraceSecret { graceSecrets -= 1 }
            return metered
        }

        /// Forgets `hash`; the id of the key it reached when that key has meters.
        mutating func drop(_ hash: SecretHash) -> String? {
            guard let removed = states.removeValue(forKey: Slot(hash)) else { return nil }
            if removed.isGraceSecret { graceSecrets -= 1 }
            guard !meters.isEmpty, meters[removed.id] != nil else { return nil }
            return removed.id
        }

        /// Applies `edits` in order; the ids of keys with meters whose secrets were dropped, and
        /// of those put with meters.
        mutating func apply(_ edits: [Edit]) -> (dropped: Set<String>, put: Set<String>) {
            var dropped: Set<String> = []
            var put: Set<String> = []
            for edit in edits {
                switch edit {
                case .upsert(let key, let hash, let old):
                    if let old, old != hash, let id = drop(old) { dropped.insert(id) }
                    if self.put(key, at: hash) { put.insert(key.id) }
                case .remove(let hash):
                    if let id = drop(hash) { dropped.insert(id) }
                }
            }
            return (dropped, put)
        }

        /// Forgets the meters of the keys `dropped` (their secrets forgotten) that were not put
        /// again since: a rotation (drop the old secret, put the new one) keeps them.
        mutating func forgetMeters(ofDropped dropped: Set<String>, putAgain: Set<String>) {
            for id in dropped.subtracting(putAgain) { meters[id] = nil }
        }
    }

    /// The first 128 bits of a secret hash.
    private struct Slot: Hashable {
        let high: UInt64
        let low: UInt64

        init(_ hash: SecretHash) { (high, low) = hash.prefix128 }

        func hash(into hasher: inout Hasher) { hasher.combine(high) }
    }

    public init(catalog: PermissionCatalog, expectedCount: Int = 0) {
        self.catalog = catalog
        self.byHash = Mutex(Entries(states: Dictionary(minimumCapacity: expectedCount)))
    }

    /// Number of keys (a key in a rotation's grace has two entries and counts once).
    public var count: Int { byHash.withLock { $0.states.count - $0.graceSecrets } }

    /// Adds or replaces the key whose secret hashes to `hash`; with `replacing`, that old hash
    /// (a rotated secret) is forgotten in the same step.
    public func upsert(_ key: KeyCheckState, hash: SecretHash, replacing old: SecretHash? = nil) {
        byHash.withLock { index in
            if let old, old != hash { _ = index.drop(old) }
            index.put(key, at: hash)
        }
    }

    /// One change of ``apply(_:)``.
    public enum Edit: Sendable {
        /// ``upsert(_:hash:replacing:)``.
        case upsert(KeyCheckState, SecretHash, replacing: SecretHash?)
        /// ``remove(hash:)``.
        case remove(SecretHash)
    }

    /// Applies `edits` in order as one step: a check sees the index before all of them or after.
    public func apply(_ edits: [Edit]) {
        byHash.withLock { index in
            let (dropped, put) = index.apply(edits)
            index.forgetMeters(ofDropped: dropped, putAgain: put)
        }
    }

    /// Replaces every entry with `edits` (applied to an empty index) as one step: a check sees
    /// the old contents or the new, never a mix. The meters of keys that remain are kept.
    public func replaceAll(with edits: [Edit]) {
        byHash.withLock { index in
            let before = Set(index.meters.keys)
            index.states.removeAll(keepingCapacity: true)
            index.graceSecrets = 0
            let (_, put) = index.apply(edits)
            index.forgetMeters(ofDropped: before, putAgain: put)
        }
    }

    /// Forgets the key whose secret hashes to `hash`.
    public func remove(hash: SecretHash) {
        byHash.withLock { index in
            if let id = index.drop(hash) { index.forgetMeters(ofDropped: [id], putAgain: []) }
        }
    }

    /// The spent credit counts a store holds (key id → spent), which count other servers' checks
    /// too: each raises this server's count where it is behind.
    public func noteStoredSpending(_ spent: [String: Int64]) {
        guard !spent.isEmpty else { return }
        let credits = byHash.withLock { index in
            spent.keys.compactMap { id in index.meters[id]?.credits.map { (id, $0) } }
        }
        for (id, counter) in credits { counter.noteStored(spent: spent[id]!) }
    }

    /// The usage credits key `id` has left by this server's count (its own checks counted at
    /// once, before the audit writer stores them); nil when it has no credits here.
    public func creditsLeft(ofKey id: String) -> Int64? {
        byHash.withLock { $0.meters[id]?.credits?.remaining }
    }

    /// The key whose secret hashes to `hash`.
    public func lookup(_ hash: SecretHash) -> KeyCheckState? {
        byHash.withLock { $0.states[Slot(hash)] }
    }

    /// Decides a check of `secret` for `permissions` at `nowMS` (docs/PROTOCOL.md §6). A leading
    /// `Bearer ` is ignored.
    public func check(
        secret: String, permissions: [String], format: SecretFormat, nowMS: Int64, clientAddress: String = ""
    ) -> CheckOutcome {
        check(
            hash: format.hash(ofPresented: secret), permissions: permissions, nowMS: nowMS,
            clientAddress: clientAddress)
    }

    /// ``check(secret:permissions:format:nowMS:clientAddress:)`` of a secret already hashed
    /// (``SecretFormat/hash(ofPresented:)``; nil: malformed).
    public func check(hash: SecretHash?, permissions: [String], nowMS: Int64, clientAddress: String) -> CheckOutcome {
        check(
            hash: hash, permissions: permissions, requirement: catalog.requirement(of: permissions), nowMS: nowMS,
            clientAddress: clientAddress)
    }

    /// ``check(hash:permissions:nowMS:clientAddress:)`` of a request prepared against this
    /// index's catalog (``PreparedCheck``): its permissions judged by one mask test.
    public func check(hash: SecretHash?, _ request: PreparedCheck, nowMS: Int64) -> CheckOutcome {
        check(
            hash: hash, permissions: request.permissions, requirement: request.requirement, nowMS: nowMS,
            clientAddress: request.clientAddress)
    }

    private func check(
        hash: SecretHash?, permissions: [String], requirement: PermissionCatalog.Requirement, nowMS: Int64,
        clientAddress: String
    ) -> CheckOutcome {
        guard let hash else { return CheckOutcome(denial: .malformedKey, key: nil) }
        guard let key = lookup(hash) else { return CheckOutcome(denial: .unknownKey, key: nil) }
        return judge(
            key, permissions: permissions, requirement: requirement, nowMS: nowMS, clientAddress: clientAddress)
    }

    /// The decision for a known key asking for `permissions` (`requirement`: the same, as a
    /// mask). A replaced secret past its grace is refused as unknown, exactly as one replaced
    /// without a grace.
    private func judge(
        _ key: KeyCheckState, permissions: [String], requirement: PermissionCatalog.Requirement, nowMS: Int64,
        clientAddress: String
    ) -> CheckOutcome {
        if key.graceIsOver(atMS: nowMS) { return CheckOutcome(denial: .unknownKey, key: nil) }
        guard key.enabled else { return CheckOutcome(denial: .disabled, key: key) }
        if let expiry = key.expiresAtMS, expiry <= nowMS { return CheckOutcome(denial: .expired, key: key) }
        if !requirement.isMet(by: key.permissions) {
            // Some name is missing: which ones, in the order asked, each once.
            var missing: [String] = []
            for permission in permissions
            where !catalog.grants(key.permissions, permission) && !missing.contains(permission) {
                missing.append(permission)
            }
            return CheckOutcome(denial: .missingPermission, key: key, missingPermissions: missing)
        }
        guard key.admits(clientAddress: clientAddress) else { return CheckOutcome(denial: .ipNotAllowed, key: key) }
        // Last the meters: only a check that would be allowed takes a token, then spends a credit.
        if let credits = key.usageCredits, !credits.hasCredit { return CheckOutcome(denial: .usageExceeded, key: key) }
        if let bucket = key.rateBucket, let waitMS = bucket.take(nowMS: nowMS) {
            return CheckOutcome(denial: .rateLimited, key: key, retryAfterMS: waitMS)
        }
        if let credits = key.usageCredits, !credits.spend() {
            // Another loop spent the last credit since: the token goes back.
            key.rateBucket?.giveBack()
            return CheckOutcome(denial: .usageExceeded, key: key)
        }
        return CheckOutcome(denial: nil, key: key)
    }
}
