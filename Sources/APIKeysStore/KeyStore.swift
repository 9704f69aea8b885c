import APIKeysCore
import Synchronization

/// Where keys, admin tokens and the audit trail are kept, in the domain's terms: the SQLite store
/// (`SQLiteKeyStore` in APIKeysSQLite, the default) and the PostgreSQL store (`APIKeysPostgres`).
///
/// A store keeps its ``index`` current: loaded when it opens, updated after every mutation that
/// commits, before that mutation returns (and, for a store shared by several servers, after each
/// change another one commits). ``KeyService`` holds the rules; a store only reads and writes.
package protocol KeyStore: Sendable {
    /// The check index this store keeps current.
    var index: KeyIndex { get }
    /// The writer of `api.request` events, which also numbers admin events.
    var auditWriter: AuditWriter { get }
    /// Whether checks may be answered from the index now: nil when they may, else why not (a
    /// replica that has lost its database for longer than its staleness bound).
    var freshness: StoreFreshness? { get }

    /// In one transaction: reads the key `keyID` (nil: none, for creations; missing: throws
    /// ``KeyError/keyNotFound(id:)``), lets `decide` say what to write, writes it with its admin
    /// events (numbered by the store), unless `deadline` passes before the commit or the admin
    /// token `token` (nil: a local caller) is no longer valid in that transaction
    /// (``KeyError/adminTokenNotValid``); then updates the index before returning `decide`'s result.
    func commit<R: Sendable>(
        reading keyID: String?, authorizedBy token: SecretHash?, deadline: Deadline,
        _ decide: @escaping @Sendable (_ current: StoredKey?) throws -> KeyDecision<R>
    ) async throws -> R

    /// The key with `id`, or ``KeyError/keyNotFound(id:)``.
    func key(id: String) async throws -> KeyRecord
    /// Up to `limit` keys after the position `after` (0: from the start), oldest first, each with
    /// its position for the next page.
    func keys(after: Int64, limit: Int) async throws -> [(position: Int64, key: KeyRecord)]

    /// Adds an admin token (its hash and grant) with its `admin_token.created` event.
    func createAdminToken(name: String, hash: SecretHash, grant: AdminGrant, event: AuditRecord) async throws
    /// Removes the admin token `name` with its `admin_token.revoked` event; false when there is none.
    func revokeAdminToken(name: String, event: AuditRecord) async throws -> Bool
    /// The admin token with `hash`, or nil.
    func adminToken(hash: SecretHash) async throws -> AdminTokenInfo?
    /// The admin tokens, oldest first.
    func adminTokens() async throws -> [AdminTokenInfo]
    /// The admin tokens by the hash of their secret.
    func adminTokensByHash() async throws -> [SecretHash: AdminTokenInfo]

    /// Records that the token of `hash` was used at `atMS` (a later time already recorded stays).
    func recordAdminTokenUse(hash: SecretHash, atMS: Int64) async throws

    /// Up to `limit` audit events matching `query` with seq below `beforeSeq`, newest first.
    func auditPage(_ query: AuditQuery, beforeSeq: Int64, limit: Int) async throws -> [AuditRecord]
    /// The time of the oldest audit event kept, nil when there is none.
    func oldestRetainedAtMS() async throws -> Int64?
    /// A page of the audit trail's hash chain: whole links after `position` (or, when it is 0
    /// and `sinceMS` is given, from the first link holding an event at or after then), at most
    /// `maxLinks` and about `maxBytes` of events but at least one link, read in one snapshot.
    func auditChainPage(after position: UInt64, sinceMS: Int64?, maxLinks: Int, maxBytes: Int) async throws
        -> AuditChain.Page

    /// Closes the store's connections (the audit writer is closed first, by the service).
    func close() async

    /// Closes what can be closed without waiting (tools and tests that cannot await: a SQLite
    /// store's connections); a store whose connections need awaiting closes them in ``close()``.
    func closeBlocking()

    /// Records the admin-token changes made while no server ran (SQLite: `apikeyd admin-token`
    /// on a stopped server writes them as pending); nothing for a store whose changes are
    /// recorded as they are made.
    func recordOfflineAdminChanges() async throws

    /// Tests: `hook` runs after each mutation commits and before the index hears of it, with the
    /// ids of the keys it changed. A store that cannot hold a mutation there ignores it.
    func setCommitHook(_ hook: (@Sendable ([String]) -> Void)?)

    /// Tests: the database may not grow (as on a full disk), or may again. A store that cannot
    /// simulate it ignores it.
    func simulateFullDisk(_ full: Bool) throws
}

/// A key as stored: the record, the hash of its current secret and, while a rotation's grace
/// lasts (`key.graceEndsAtMS`), the hash of the secret it replaced.
package struct StoredKey: Sendable {
    package var key: KeyRecord
    package var hash: SecretHash
    package var graceHash: SecretHash?

    package init(key: KeyRecord, hash: SecretHash, graceHash: SecretHash? = nil) {
        self.key = key
        self.hash = hash
        self.graceHash = graceHash
    }

    /// Every secret hash that reaches this key in the check index.
    package var hashes: [SecretHash] { [hash] + (graceHash.map { [$0] } ?? []) }

    /// The hash of the secret in its rotation's grace at `now`; nil when there is none, or it is over.
    package func liveGraceHash(at now: Int64) -> SecretHash? {
        guard let graceHash, let end = key.graceEndsAtMS, end > now else { return nil }
        return graceHash
    }
}

/// What one write does to the `keys` table and so to the check index.
package enum KeyWrite: Sendable {
    /// A new key.
    case insert(KeyRecord, SecretHash)
    /// The key's new state, under `hash` and, during a rotation's grace, `graceHash` too;
    /// `forgetting`: hashes that reached the key before and no longer do.
    case update(KeyRecord, hash: SecretHash, graceHash: SecretHash?, forgetting: [SecretHash])
    /// The key is gone, with every secret hash that reached it.
    case delete(KeyRecord, hashes: [SecretHash])

    /// `stored` changed to `key` under `hash` and `graceHash`: forgets whatever hash of `stored`
    /// is neither.
    package static func update(
        _ key: KeyRecord, hash: SecretHash, graceHash: SecretHash? = nil, from stored: StoredKey
    ) -> KeyWrite {
        .update(
            key, hash: hash, graceHash: graceHash, forgetting: stored.hashes.filter { $0 != hash && $0 != graceHash })
    }

    package var key: KeyRecord {
        switch self {
        case .insert(let key, _), .update(let key, _, _, _), .delete(let key, _): key
        }
    }

    /// The key as stored after this write (nil: deleted).
    package var stored: StoredKey? {
        switch self {
        case .insert(let key, let hash): StoredKey(key: key, hash: hash)
        case .update(let key, let hash, let grace, _): StoredKey(key: key, hash: hash, graceHash: grace)
        case .delete: nil
        }
    }

    /// What this write does to the check index, in order: hashes to forget first, then each hash
    /// that reaches the key with whether it is the grace secret.
    package var indexEntries: [IndexEntry] {
        switch self {
        case .insert(_, let hash): [.put(hash, graceSecret: false)]
        case .update(_, let hash, let grace, let forgetting):
            forgetting.map(IndexEntry.drop) + [.put(hash, graceSecret: false)]
                + (grace.map { [.put($0, graceSecret: true)] } ?? [])
        case .delete(_, let hashes): hashes.map(IndexEntry.drop)
        }
    }

    /// One entry of ``indexEntries``.
    package enum IndexEntry: Sendable {
        /// `hash` reaches the key's state (as its grace secret, until `key.graceEndsAtMS`, or not).
        case put(SecretHash, graceSecret: Bool)
        /// `hash` reaches nothing.
        case drop(SecretHash)
    }
}

/// What a mutation decided from the stored state: its result, its writes and its admin events.
package struct KeyDecision<R: Sendable>: Sendable {
    package var result: R
    package var writes: [KeyWrite]
    /// Unnumbered (seq 0): the store numbers them in the transaction.
    package var events: [AuditRecord]

    package init(result: R, writes: [KeyWrite] = [], events: [AuditRecord] = []) {
        self.result = result
        self.writes = writes
        self.events = events
    }
}

extension KeyIndex {
    /// Applies committed writes, in commit order, as one step.
    package func apply(_ writes: [KeyWrite]) {
        apply(writes.flatMap { write in write.indexEntries.map { $0.edit(for: write.key, in: catalog) } })
    }
}

extension KeyWrite.IndexEntry {
    /// This entry as a change of the index, for `key`.
    package func edit(for key: KeyRecord, in catalog: PermissionCatalog) -> KeyIndex.Edit {
        switch self {
        case .put(let hash, let graceSecret):
            .upsert(key.checkState(in: catalog, ofGraceSecret: graceSecret), hash, replacing: nil)
        case .drop(let hash): .remove(hash)
        }
    }
}

/// How current a replica's index is, for a store shared by several servers: the time of its last
/// confirmed catch-up with the database, read by every check (one atomic load).
package final class StoreFreshness: Sendable {
    /// How long checks are answered from the last state after the database was last reached.
    package let maxStalenessMS: Int64
    private let confirmedAtMS = Atomic<Int64>(0)
    private let behind = Atomic<Int64>(0)
    private let outrun = Atomic<Bool>(false)
    private let reloading = Atomic<Bool>(false)
    private let rewrites = Atomic<Int64>(0)
    private let lost = Atomic<Int64>(0)

    package init(maxStalenessMS: Int64) { self.maxStalenessMS = maxStalenessMS }

    /// The database's history was found rewritten (a failover that lost committed changes, a
    /// restore): checks fail closed until ``endReload(changesLost:)``.
    package func beginReload() {
        if !reloading.exchange(true, ordering: .relaxed) { rewrites.add(1, ordering: .relaxed) }
    }

    /// The index was loaded again; `changesLost` changes it had applied were not in the database.
    package func endReload(changesLost: Int) {
        lost.add(Int64(changesLost), ordering: .relaxed)
        reloading.store(false, ordering: .releasing)
    }

    /// Rewritten histories found since start, and the changes they lost that this replica had applied.
    package var historyRewrites: (rewrites: Int64, changesLost: Int64) {
        (rewrites.load(ordering: .relaxed), lost.load(ordering: .relaxed))
    }

    /// The index held every change the database had at `atMS` (a time read before asking it).
    package func confirm(atMS: Int64) { confirmedAtMS.raise(to: atMS) }

    /// Changes known to exist that the index does not hold yet.
    package func setVersionsBehind(_ count: Int64) { behind.store(count, ordering: .relaxed) }

    /// Milliseconds since the last confirmed catch-up at `nowMS` (0 before the first).
    package func lagMS(nowMS: Int64) -> Int64 {
        let confirmed = confirmedAtMS.load(ordering: .acquiring)
        return confirmed == 0 ? 0 : max(0, nowMS - confirmed)
    }

    package var versionsBehind: Int64 { behind.load(ordering: .relaxed) }

    /// The database no longer holds changes this index has not applied: checks fail closed from
    /// now on (a restart reloads the keys). True for the first call only.
    package func markOutrun() -> Bool { !outrun.exchange(true, ordering: .relaxed) }

    package var isOutrun: Bool { outrun.load(ordering: .relaxed) }

    /// True when checks must fail closed at `nowMS`.
    package func isStale(nowMS: Int64) -> Bool {
        nowMS - confirmedAtMS.load(ordering: .acquiring) > maxStalenessMS || outrun.load(ordering: .relaxed)
            || reloading.load(ordering: .acquiring)
    }

    /// Why checks fail closed at `nowMS`, or nil.
    package func problem(nowMS: Int64) -> StoreError? {
        if outrun.load(ordering: .relaxed) { return .outrun }
        if reloading.load(ordering: .acquiring) { return .historyRewritten }
        guard isStale(nowMS: nowMS) else { return nil }
        return .stale(lagMS: lagMS(nowMS: nowMS), boundMS: maxStalenessMS)
    }
}

extension Atomic where Value == Int64 {
    /// Raises the value to `candidate` if that is higher (never lowers it).
    package func raise(to candidate: Int64) {
        var current = load(ordering: .relaxed)
        while current < candidate {
            let (exchanged, original) = compareExchange(expected: current, desired: candidate, ordering: .releasing)
            if exchanged { break }
            current = original
        }
    }
}
