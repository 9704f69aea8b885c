import APIKeysCore
import Logging
import Synchronization

/// The key authority: admin operations persisted in SQLite, checks answered from memory.
///
/// Each mutation and its audit event commit in one transaction before the call returns, and the
/// in-memory ``KeyIndex`` is updated before it returns too, so a killed secret is refused from
/// then on. Checks never read SQLite; their `api.request` events go through the batched
/// ``AuditWriter``. Admin operations are serialised on one connection; checks run concurrently.
///
/// ```swift
/// let service = try KeyService.open(path: "data/apikeys.sqlite")
/// let created = try service.createKey(name: "ci", permissions: ["jobs:read"], actor: "ops")
/// let outcome = try service.check(secret: created.secret, permissions: ["jobs:read"])
/// service.close()
/// ```
public final class KeyService: Sendable {
    /// The permissions keys can be granted.
    public let catalog: PermissionCatalog
    /// The secret format (prefix) of this service.
    public let format: SecretFormat
    /// The in-memory check index.
    public let index: KeyIndex
    let clock: any WallClock
    let admin: Mutex<SQLiteConnection?>
    let auditWriter: AuditWriter
    let logger: Logger
    /// Tests only: runs after a mutation committed, before its index change, with the key ids.
    let commitHook = Mutex<(@Sendable ([String]) -> Void)?>(nil)

    /// Default and largest page sizes of list calls.
    public static let defaultPageSize = 50
    /// Audit events queued for the writer before checks fail closed (UNAVAILABLE).
    public static let defaultAuditQueueCapacity = 100_000
    public static let maxPageSize = 1000

    private init(
        catalog: PermissionCatalog, format: SecretFormat, clock: any WallClock, admin: SQLiteConnection,
        auditWriter: AuditWriter, expectedKeys: Int, logger: Logger
    ) {
        self.catalog = catalog
        self.format = format
        self.index = KeyIndex(catalog: catalog, expectedCount: expectedKeys)
        self.clock = clock
        self.admin = Mutex(admin)
        self.auditWriter = auditWriter
        self.logger = logger
    }

    /// Opens (creating and migrating if needed) the database at `path` and loads the check index.
    /// Throws ``StoreError`` for a file that is unreadable, locked or corrupt.
    public static func open(
        path: String, catalog: PermissionCatalog = .standard, format: SecretFormat = .standard,
        clock: any WallClock = SystemWallClock(), auditMode: AuditMode = .full, auditQueueCapacity: Int = defaultAuditQueueCapacity,
        auditRetentionMS: Int64 = 0, busyTimeoutMS: Int32 = 5000,
        logger: Logger = Logger(label: "apikeys.store")
    ) throws -> KeyService {
        let db = try SQLiteConnection(path: path, busyTimeoutMS: busyTimeoutMS)
        try Schema.migrate(db, nowMS: clock.nowMS())
        let last = try AuditTable.last(in: db)
        let keyCount = try KeyTable.count(in: db)
        let writer = AuditWriter(
            connection: try SQLiteConnection(path: path, busyTimeoutMS: busyTimeoutMS), lastSeq: last.seq,
            lastAtMS: last.batchAtMS,
            mode: auditMode, clock: clock,
            capacity: auditQueueCapacity, retentionMS: auditRetentionMS, logger: logger)
        let service = KeyService(
            catalog: catalog, format: format, clock: clock, admin: db, auditWriter: writer, expectedKeys: keyCount,
            logger: logger)
        do {
            try KeyTable.load(into: service.index, in: db)
        } catch {
            service.close()
            throw error
        }
        return service
    }

    /// Writes the queued audit events and closes the database; returns how many events could not
    /// be written because the disk kept refusing them until `timeout` had passed. Calls after
    /// this throw ``StoreError/closed``.
    @discardableResult
    public func close(timeout: Duration) async -> Int {
        let unwritten = await auditWriter.close(timeout: timeout)
        closeAdmin()
        return unwritten
    }

    /// ``close(timeout:)`` for synchronous callers (tools, tests): blocks its thread, so never
    /// call it on a task's executor.
    @discardableResult
    public func close(blockingFor timeout: Duration = .seconds(10)) -> Int {
        let unwritten = auditWriter.closeBlocking(timeout: timeout)
        closeAdmin()
        return unwritten
    }

    private func closeAdmin() {
        admin.withLock { db in
            db?.close()
            db = nil
        }
    }

    /// Tests only: `hook` runs after each mutation commits and before the check index hears of
    /// it, with the ids of the keys it changed (to hold a mutation in that window).
    @_spi(Testing) public func setCommitHook(_ hook: (@Sendable ([String]) -> Void)?) {
        commitHook.withLock { $0 = hook }
    }

    /// Tests only: the database may not grow (both connections then get SQLITE_FULL, as on a
    /// full disk), or may again.
    @_spi(Testing) public func simulateFullDisk(_ full: Bool) throws {
        try withAdmin { try $0.forbidGrowth(full) }
        auditWriter.forbidGrowth(full)
    }

    /// Tests only: makes the audit writer stop (or resume) taking events, as if its disk had stalled.
    @_spi(Testing) public func pauseAuditWriter(_ paused: Bool) { auditWriter.setPaused(paused) }

    /// True while the audit writer is more than half its queue behind: a server should stop
    /// reading new checks until it is not (backpressure), rather than have them refused.
    public var auditIsBacklogged: Bool { auditWriter.isUnderPressure }

    /// Audit events waiting in the writer's queue, and events it has committed since it started.
    public var auditTrailCounts: (queued: Int, written: Int) { auditWriter.counts }

    /// Whether the audit writer keeps up, for a readiness probe: nil when it does, else why not.
    /// Not keeping up: closing, more than half its queue behind, or events waiting for over
    /// `stallLimit` without the writer committing any (a stalled or failing disk).
    public func auditWriterProblem(stallLimit: Duration = .seconds(2)) -> String? {
        if auditWriter.isClosing { return "the key store is closing" }
        if auditWriter.isUnderPressure { return "the audit writer is more than half its queue behind" }
        let stalled = auditWriter.stalledFor
        if stalled > stallLimit {
            return "the audit writer has committed nothing for \(stalled.components.seconds) s while events wait"
        }
        return nil
    }

    /// Waits until every `api.request` event of a check that has returned is committed.
    public func flushAuditTrail() async { await auditWriter.flush() }

    /// ``flushAuditTrail()`` for synchronous callers (tools, tests): blocks its thread.
    public func flushAuditTrail() { auditWriter.flushBlocking() }

    /// The next audit sequence number: events are numbered in the order they happen.
    func takeSeq() -> UInt64 { auditWriter.takeSeq() }

    /// Runs `body` with the admin connection.
    func withAdmin<R>(_ body: (SQLiteConnection) throws -> R) throws -> R {
        try admin.withLock { db in
            guard let db else { throw StoreError.closed }
            return try body(db)
        }
    }

    // MARK: Checks

    /// Decides whether `secret` is a live key holding every one of `permissions`, and records an
    /// `api.request` audit event for a well-formed secret. Reads no storage.
    /// Throws ``KeyError/checkFieldTooLarge(field:limit:)`` beyond ``CheckLimits`` (a long
    /// resource is recorded cut instead), ``StoreError/auditBacklog(capacity:)`` when the event
    /// cannot be queued.
    public func check(
        secret: String, permissions: [String], resource: String = "", clientAddress: String = ""
    ) throws -> CheckOutcome {
        try CheckLimits.validate(permissions: permissions, clientAddress: clientAddress)
        let now = clock.nowMS()
        let outcome = index.check(secret: secret, permissions: permissions, format: format, nowMS: now)
        guard outcome.denial != .malformedKey else { return outcome }
        let event = AuditRecord(
            atMS: now, action: .apiRequest, keyID: outcome.key?.id ?? "",
            keyName: outcome.key?.name ?? "", denial: outcome.denial, permissions: permissions,
            resource: CheckLimits.recorded(resource: resource), clientAddress: clientAddress)
        guard auditWriter.enqueue(event) else {
            throw auditWriter.isClosing ? StoreError.closed : StoreError.auditBacklog(capacity: auditWriter.capacity)
        }
        return outcome
    }

    // MARK: Audit trail

    /// Audit events matching `query`, newest first; `pageToken` is the previous page's
    /// `nextPageToken` (nil for the first page). Events of deleted keys stay.
    public func listAuditEvents(_ query: AuditQuery, pageSize: Int = 0, pageToken: String? = nil) throws
        -> (events: [AuditRecord], nextPageToken: String?)
    {
        let limit = Self.clampPageSize(pageSize)
        let before = try Self.cursor(from: pageToken) ?? Int64.max
        let events = try withAdmin { try AuditTable.page(query, beforeSeq: before, limit: limit + 1, in: $0) }
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
    public func auditRetention() throws -> (oldestRetainedAtMS: Int64?, retentionMS: Int64) {
        (try withAdmin { try AuditRetention.oldestRetainedAtMS(in: $0) }, auditWriter.retentionMS)
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
