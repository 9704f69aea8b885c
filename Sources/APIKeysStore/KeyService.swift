import APIKeysCore
import Logging
import Synchronization

/// The key authority: the rules of keys, checks answered from memory, admin operations
/// persisted by a ``KeyStore`` (SQLite by default; PostgreSQL for several replicas).
///
/// Each mutation and its audit event commit in one transaction before the call returns, and the
/// in-memory ``KeyIndex`` is updated before it returns too, so a killed secret is refused from
/// then on. Checks never read the store; their `api.request` events go through the batched
/// ``AuditWriter``.
///
/// ```swift
/// let service = try KeyService.open(path: "data/apikeys.sqlite")
/// let created = try await service.createKey(name: "ci", permissions: ["jobs:read"], actor: "ops")
/// let outcome = try service.check(secret: created.secret, permissions: ["jobs:read"])
/// await service.close(timeout: .seconds(10))
/// ```
public final class KeyService: Sendable {
    /// The permissions keys can be granted.
    public let catalog: PermissionCatalog
    /// The secret format (prefix) of this service.
    public let format: SecretFormat
    /// The longest lifetime a key may be given (its expiry at most this far from when it is set);
    /// nil: no limit, keys may never expire.
    public let maxKeyLifetimeMS: Int64?
    /// The in-memory check index (the store's, held here: a check reads it without going
    /// through the store's protocol).
    public let index: KeyIndex
    let clock: any WallClock
    let store: any KeyStore
    /// The store's audit writer and freshness, held here for the check path.
    let auditWriter: AuditWriter
    let freshness: StoreFreshness?
    let logger: Logger
    /// Admin tokens seen valid (hash → name), for the key changes that check their token again at
    /// commit (``authenticate(adminToken:recheckedAtCommit:)``). Holds only tokens that were valid.
    let knownAdminTokens = Mutex<[SecretHash: AdminTokenInfo]>([:])
    /// Store reads under way of admin tokens not in ``knownAdminTokens``, one per token and at
    /// most ``maxUnknownAdminTokenReads``, with the calls waiting for each (``readAdminToken(_:)``).
    let unknownAdminTokenReads = Mutex<[SecretHash: [UnknownTokenRead.Waiter]]>([:])
    /// Calls refused because ``maxUnknownAdminTokenReads`` reads were under way, since start.
    let refusedAdminTokenReadCount = Atomic<Int>(0)
    /// An admin call with a malformed token is numbering the changes made offline
    /// (``authenticate(adminToken:recheckedAtCommit:)``).
    let recordingOfflineAdminChanges = Atomic<Bool>(false)
    /// When this server last wrote each admin token's last use (``adminTokenUseResolutionMS``).
    let adminTokenUses = Mutex<[SecretHash: Int64]>([:])
    /// When a leak report of an already disabled key was last recorded, by key id
    /// (``reportLeakedKey(secret:source:reporterAddress:deadline:)``).
    let recordedLeakReports = Mutex<[String: Int64]>([:])

    /// Default and largest page sizes of list calls.
    public static let defaultPageSize = 50
    /// Audit events queued for the writer before checks fail closed (UNAVAILABLE).
    public static let defaultAuditQueueCapacity = 100_000
    public static let maxPageSize = 1000

    /// A service over `store` (see ``open(path:catalog:format:clock:auditMode:auditQueueCapacity:auditRetentionMS:busyTimeoutMS:maxKeyLifetimeMS:logger:)``
    /// for SQLite).
    package init(
        store: any KeyStore, format: SecretFormat, clock: any WallClock, maxKeyLifetimeMS: Int64? = nil, logger: Logger
    ) {
        self.index = store.index
        self.catalog = store.index.catalog
        self.format = format
        self.maxKeyLifetimeMS = maxKeyLifetimeMS
        self.clock = clock
        self.store = store
        self.auditWriter = store.auditWriter
        self.freshness = store.freshness
        self.logger = logger
    }

    /// Writes the queued audit events and closes the store; returns how many events could not
    /// be written because the store kept refusing them until `timeout` had passed. Calls after
    /// this throw ``StoreError/closed``.
    @discardableResult
    public func close(timeout: Duration) async -> Int {
        let unwritten = await auditWriter.close(timeout: timeout)
        await store.close()
        return unwritten
    }

    /// ``close(timeout:)`` for synchronous callers (tools, tests) of a SQLite service: blocks
    /// its thread, so never call it on a task's executor.
    @discardableResult
    public func close(blockingFor timeout: Duration = .seconds(10)) -> Int {
        let unwritten = auditWriter.closeBlocking(timeout: timeout)
        store.closeBlocking()
        return unwritten
    }

    /// What the server does once before serving: on SQLite, numbers the admin-token changes that
    /// `apikeyd admin-token` made while it was stopped; takes the live admin tokens as seen valid.
    public func prepareToServe() async throws {
        try await store.recordOfflineAdminChanges()
        // Every live token counts as seen valid from the start, as if each had been presented
        // once: an operator's first call after a restart is not taken for a stranger's (the
        // admin API's rate, the bound on reads of unknown tokens). A change made from memory is
        // still checked again at its commit, and a call that finds a token gone forgets it.
        let now = clock.nowMS()
        let live = try await store.adminTokensByHash().filter { !$0.value.grant.isExpired(atMS: now) }
        knownAdminTokens.withLock { $0.merge(live) { seen, _ in seen } }
    }

    /// Tests only: `hook` runs after each mutation commits and before the check index hears of
    /// it, with the ids of the keys it changed (to hold a mutation in that window). SQLite only.
    @_spi(Testing) public func setCommitHook(_ hook: (@Sendable ([String]) -> Void)?) {
        store.setCommitHook(hook)
    }

    /// Tests only: the database may not grow (both connections then get SQLITE_FULL, as on a
    /// full disk), or may again. SQLite only.
    @_spi(Testing) public func simulateFullDisk(_ full: Bool) throws {
        try store.simulateFullDisk(full)
    }

    /// True while the audit writer is more than half its queue behind: a server should stop
    /// reading new checks until it is not (backpressure), rather than have them refused.
    public var auditIsBacklogged: Bool { auditWriter.isUnderPressure }

    /// How far behind the audit writer is (``AuditPressure``): a server pauses its heaviest
    /// senders first.
    public var auditPressure: AuditPressure { auditWriter.pressure }

    /// Audit events waiting in the writer's queue, and events it has committed since it started.
    public var auditTrailCounts: (queued: Int, written: Int) { auditWriter.counts }

    /// Whether the audit writer keeps up, for a readiness probe: nil when it does, else why not.
    /// Not keeping up: closing, more than half its queue behind, or events waiting for over
    /// `stallLimit` without the writer committing any (a stalled or failing disk).
    public func auditWriterProblem(stallLimit: Duration = .seconds(2)) -> String? {
        if auditWriter.isClosing { return "the key store is closing" }
        if auditWriter.isUnderPressure { return "the audit writer is more than half its queue behind" }
        if let problem = diskProblem { return problem }
        let stalled = auditWriter.stalledFor
        if stalled > stallLimit {
            return "the audit writer has committed nothing for \(stalled.components.seconds) s while events wait"
        }
        return nil
    }

    /// Below this many free bytes on the audit trail's disk (SQLite), checks of unknown keys are
    /// no longer recorded: 256 MiB unless configured.
    public static let defaultMinFreeDiskBytes: Int64 = 256 << 20

    /// Why the disk the audit trail is written to is short of room (below the minimum free
    /// space: checks of unknown keys are no longer recorded), else nil.
    public var diskProblem: String? {
        let disk = auditWriter.disk
        guard disk.isLow, let free = disk.freeBytes else { return nil }
        return
            "the audit trail's disk has \(free >> 20) MiB free, below the minimum of \(auditWriter.minFreeDiskBytes >> 20) MiB: checks of unknown keys are no longer recorded"
    }

    /// The audit trail's disk: its free bytes at the last look (nil: not a local disk), and the
    /// checks of unknown keys not recorded because it was low.
    public var auditDisk: (freeBytes: Int64?, shedUnknownKeyChecks: Int) {
        (auditWriter.disk.freeBytes, auditWriter.shedUnknownKeyChecks)
    }

    /// For a readiness probe: nil while checks are answered from a current index, else why not
    /// (a replica that has not reached its database for longer than its staleness bound).
    public var freshnessProblem: String? {
        freshness?.problem(nowMS: clock.nowMS())?.description
    }

    /// How far this replica's index may be behind its database: time since its last confirmed
    /// catch-up and changes known but not applied; nil for a store of one server (SQLite).
    public var replicaLag: (seconds: Double, versionsBehind: Int64)? {
        freshness.map { (Double($0.lagMS(nowMS: clock.nowMS())) / 1000, $0.versionsBehind) }
    }

    /// Rewritten database histories this replica found (a failover that lost changes it had
    /// applied, a restore) and the applied changes they lost; nil for a store of one server.
    public var replicaHistoryRewrites: (rewrites: Int64, changesLost: Int64)? { freshness?.historyRewrites }

    /// Waits until every `api.request` event of a check that has returned is committed.
    public func flushAuditTrail() async { await auditWriter.flush() }

    /// ``flushAuditTrail()`` for synchronous callers (tools, tests): blocks its thread.
    public func flushAuditTrail() { auditWriter.flushBlocking() }

    // MARK: Checks

    /// Decides whether `secret` is a live key holding every one of `permissions`, and records an
    /// `api.request` audit event for a well-formed secret. Reads no storage. Throws
    /// ``StoreError/stale(lagMS:boundMS:)`` on a replica past its staleness bound, or
    /// ``StoreError/outrun`` on one that can no longer catch up (fail closed).
    /// Throws ``KeyError/checkFieldTooLarge(field:limit:)`` beyond ``CheckLimits`` (a long
    /// resource is recorded cut instead), ``StoreError/auditBacklog(capacity:)`` when the event
    /// cannot be queued.
    /// A connection that keeps a `memo` from check to check has a secret presented again not
    /// hashed again.
    public func check(
        secret: String, permissions: [String], resource: String = "", clientAddress: String = "",
        memo: PresentedSecretMemo? = nil
    ) throws -> CheckOutcome {
        try check(
            secret: secret, prepare(permissions: permissions, resource: resource, clientAddress: clientAddress),
            memo: memo)
    }

    /// What a check asks, validated and resolved against this service's catalog
    /// (``PreparedCheck``), for ``check(secret:_:memo:)``: a connection asking the same again
    /// may keep it. Throws ``KeyError/checkFieldTooLarge(field:limit:)`` beyond ``CheckLimits``.
    public func prepare(permissions: [String], resource: String = "", clientAddress: String = "") throws(KeyError)
        -> PreparedCheck
    {
        try PreparedCheck(permissions: permissions, resource: resource, clientAddress: clientAddress, catalog: catalog)
    }

    /// ``check(secret:permissions:resource:clientAddress:memo:)`` of a request prepared by this
    /// service (``prepare(permissions:resource:clientAddress:)``).
    public func check(secret: String, _ request: PreparedCheck, memo: PresentedSecretMemo? = nil) throws
        -> CheckOutcome
    {
        let now = clock.nowMS()
        if let freshness, freshness.isStale(nowMS: now), let problem = freshness.problem(nowMS: now) { throw problem }
        let hash =
            if let memo { memo.hash(ofPresented: secret, format: format) } else { format.hash(ofPresented: secret) }
        let outcome = index.check(hash: hash, request, nowMS: now)
        guard outcome.denial != .malformedKey else { return outcome }
        let event = AuditRecord(
            atMS: now, action: .apiRequest, keyID: outcome.key?.id ?? "",
            keyName: outcome.key?.name ?? "", detail: outcome.key?.isGraceSecret == true ? Self.graceSecretDetail : "",
            denial: outcome.denial, permissions: request.permissions, resource: request.recordedResource,
            clientAddress: request.clientAddress)
        try enqueueRequestEvent(consume event)
        return outcome
    }

    /// Records an `api.request` event for a request refused before any decision (forward-auth: a
    /// path that cannot be judged, a malformed permission header, control characters), denied
    /// ``Denial/invalidRequest`` with `why` as its detail and no permissions. A secret that names
    /// a key is recorded under that key, one event as for every check of a real key; any other
    /// is sampled with the checks of unknown keys (``UnknownKeySampler``). Control characters of
    /// `resource` are kept escaped (`\x1b`); the rest of it as it arrived, cut as a check's is.
    public func recordInvalidRequest(secret: String, resource: String, clientAddress: String, why: String) throws
        -> CheckOutcome
    {
        let now = clock.nowMS()
        let key = format.hash(ofPresented: secret).flatMap(index.lookup)
        let event = AuditRecord(
            atMS: now, action: .apiRequest, keyID: key?.id ?? "", keyName: key?.name ?? "", detail: why,
            denial: .invalidRequest, permissions: [],
            resource: CheckLimits.recorded(resource: TextEscape.controlsEscaped(resource)),
            clientAddress: String(
                TextEscape.controlsEscaped(clientAddress).utf8.prefix(CheckLimits.maxClientAddressBytes)) ?? "")
        try enqueueRequestEvent(consume event)
        return CheckOutcome(denial: .invalidRequest, key: key)
    }

    /// Records that `actor` was refused `method` (``KeyError/permissionDenied(_:)``: `why`) as an
    /// `admin.permission_denied` event. Best effort: a full audit queue drops it (the call was
    /// refused either way, and nothing changed).
    public func recordPermissionDenied(actor: AdminActor, method: String, why: String) {
        _ = auditWriter.enqueue(
            Self.event(
                .adminPermissionDenied, actor: actor.name, detail: "\(method) refused: \(why)", at: clock.nowMS()))
    }

    /// Queues an `api.request` event; throws ``StoreError/closed`` while closing, else
    /// ``StoreError/auditBacklog(capacity:)`` when the queue is full (the caller fails closed).
    private func enqueueRequestEvent(_ event: consuming AuditRecord) throws {
        guard auditWriter.enqueue(consume event) else {
            throw auditWriter.isClosing ? StoreError.closed : StoreError.auditBacklog(capacity: auditWriter.capacity)
        }
    }

    /// The detail of an `api.request` event whose secret is one a rotation replaced, checked during
    /// its grace period (the `key.rotated` event says until when).
    public static let graceSecretDetail = "with the secret replaced by the last rotation, in its grace period"

    // MARK: Audit trail

    /// Audit events matching `query`, newest first; `pageToken` is the previous page's
    /// `nextPageToken` (nil for the first page). Events of deleted keys stay.
    public func listAuditEvents(_ query: AuditQuery, pageSize: Int = 0, pageToken: String? = nil) async throws
        -> (events: [AuditRecord], nextPageToken: String?)
    {
        let limit = Self.clampPageSize(pageSize)
        let before = try Self.cursor(from: pageToken) ?? Int64.max
        let events = try await store.auditPage(query, beforeSeq: before, limit: limit + 1)
        // A page also ends before it would exceed the byte budget (always holding one event), so
        // that no page of large events outgrows what a client accepts in one frame.
        var bytes = 0
        var count = 0
        while count < min(limit, events.count) {
            bytes += events[count].approximateEncodedSize
            if count > 0 && bytes > Self.maxPageBytes { break }
            count += 1
        }
        guard events.count > count else { return (events, nil) }
        return (Array(events.prefix(count)), String(events[count - 1].seq))
    }

    /// Largest encoded size of one page of audit events: a quarter of the client library's
    /// default frame limit (4 MiB), leaving room for smaller clients and the envelope.
    public static let maxPageBytes = 1 << 20

    /// The time of the oldest audit event kept (nil when the trail is empty) and how long events
    /// are kept (0: forever); older ones are pruned by the audit writer, every minute.
    public func auditRetention() async throws -> (oldestRetainedAtMS: Int64?, retentionMS: Int64) {
        (try await store.oldestRetainedAtMS(), auditWriter.retentionMS)
    }

    /// A page of the audit trail's hash chain (``AuditChain``) after link `position`, or from
    /// the first link with an event at or after `sinceMS` when `position` is 0: whole links, at
    /// most `pageSize` (clamped as for events) and ``maxPageBytes`` of events, at least one.
    public func auditChainPage(after position: UInt64, sinceMS: Int64? = nil, pageSize: Int = 0) async throws
        -> AuditChain.Page
    {
        // Positions are stored as SQL integers (signed 64-bit): one past them is past the chain.
        guard position <= UInt64(Int64.max) else {
            throw KeyError(
                code: .invalidPageToken, field: "after_position", description: "after_position is beyond the chain")
        }
        return try await store.auditChainPage(
            after: position, sinceMS: sinceMS, maxLinks: Self.clampPageSize(pageSize), maxBytes: Self.maxPageBytes)
    }

    /// Walks the whole hash chain of the audit trail, from its anchor to the head it had when the
    /// walk began, and verifies every link (``AuditChainVerifier``): a tool's check of a store
    /// (a backup before it is put in place). Throws ``AuditChainVerifier/Break`` at the first break.
    public func verifyAuditChain() async throws -> AuditChainVerification {
        try await AuditChainVerifier.walk(
            page: { after in
                let page = try await auditChainPage(after: after ?? 0, pageSize: Self.maxPageSize)
                return (page.state, page.links.map(\.link))
            },
            reading: { link in
                AuditChainVerifier.Reading(
                    position: link.position, hash: link.hash, entries: link.events.map(AuditChain.Entry.init),
                    prunedFrom: link.prunedFrom)
            })
    }

    /// Tests and tools: prunes expired audit events now and waits until done (blocks its thread).
    @_spi(Testing) public func pruneAuditTrailNow() { auditWriter.pruneNowBlocking() }

    static func clampPageSize(_ requested: Int) -> Int {
        requested <= 0 ? defaultPageSize : min(requested, maxPageSize)
    }

    /// The position a page token stands for; nil for no token.
    static func cursor(from token: String?) throws -> Int64? {
        guard let token, !token.isEmpty else { return nil }
        guard let value = Int64(token), value > 0 else { throw KeyError.invalidPageToken(token) }
        return value
    }
}
