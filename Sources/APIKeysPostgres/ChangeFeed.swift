import APIKeysCore
import APIKeysStore
import Logging
import PostgresNIO
import Synchronization

/// Keeps one replica's index current with the database's change log.
///
/// Changes are applied in version order, each batch as one step of the index (``KeyIndex/apply(_:)``).
/// They arrive three ways: the replica's own mutations (``applyOwn(_:)``, before the call
/// returns), a `LISTEN` on a dedicated connection (not a pooled one) that catches up on every
/// `NOTIFY`, and a poll every ``pollInterval`` that bounds the cost of a lost notification. Every
/// successful catch-up confirms the index as current as of the time it started
/// (``StoreFreshness``); after a reconnect the listener listens again, then catches up from the
/// last version applied.
///
/// Every catch-up first asks whether the database still holds the newest change applied (and
/// any own change applied out of order), and which history it is (``DatabaseHistory``). When it
/// does not, its history was rewritten (a failover that lost committed changes, a restore): the
/// replica fails closed, loads every key again, and reports the changes it had applied that the
/// database no longer has (log, metric, `key.change_lost` events).
final class ChangeFeed: Sendable {
    let freshness: StoreFreshness
    /// How often the replica asks for changes it may not have heard of.
    static let pollInterval: Duration = .milliseconds(250)
    /// Changes read per query while catching up.
    static let pageSize = 2000
    /// How long the change log keeps a change: a replica out of touch with the database for
    /// longer cannot catch up (it fails closed until restarted, see ``StoreFreshness/markOutrun()``).
    static let retentionMS: Int64 = 3_600_000
    /// The newest changes kept whatever their age (so that pruning is a range of the primary key).
    static let keptChanges: Int64 = 100_000
    /// How often each replica prunes the change log.
    static let pruneIntervalMS: Int64 = 60_000
    /// The newest changes applied that a replica remembers, to name those a rewritten history lost.
    static let rememberedChanges = 10_000
    /// The lost changes logged one by one; the rest are counted.
    static let loggedLostChanges = 100

    private let index: KeyIndex
    /// What is applied; changes are applied under this lock, in order.
    private let applied: Mutex<Applied>
    /// The highest version announced by a NOTIFY.
    private let announced = Atomic<Int64>(0)
    private let client: PostgresClient
    private let location: PostgresLocation
    /// This replica's number (in the actor of the events it writes).
    private let replica: Int64
    private let auditWriter: AuditWriter
    private let clock: any WallClock
    private let logger: Logger
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let listener = Mutex<PostgresConnection?>(nil)
    /// The reload under way, which every catch-up meanwhile waits for.
    private let reload = Mutex<Task<Void, any Error>?>(nil)
    /// What was last logged about the database and the bound, so that changes are logged once.
    private let reported = Mutex<(reachable: Bool, stale: Bool, listening: Bool)>((true, false, false))
    /// When this replica last pruned the change log.
    private let prunedAtMS = Atomic<Int64>(0)

    /// The changes the index holds, as far as the database's history goes.
    private struct Applied {
        /// The highest version applied in order.
        var version: Int64
        var history: DatabaseHistory
        /// The newest changes applied (at most ``rememberedChanges``), oldest first.
        var recent: [ChangeRows.Change] = []
        /// Own changes applied out of order (the database was gone right after their commit),
        /// until the database is seen to hold them.
        var unconfirmed: [ChangeRows.Change] = []

        mutating func remember(_ changes: some Collection<ChangeRows.Change>) {
            recent.append(contentsOf: changes)
            if recent.count > ChangeFeed.rememberedChanges * 2 {
                recent.removeFirst(recent.count - ChangeFeed.rememberedChanges)
            }
        }

        /// Whether the change numbered `version` was applied as the one of `keyID`.
        func applied(_ version: Int64, keyID: String) -> Bool {
            guard let last = recent.last, version <= last.version else { return false }
            var low = 0
            var high = recent.count - 1
            while low <= high {
                let middle = (low + high) / 2
                if recent[middle].version == version { return recent[middle].keyID == keyID }
                if recent[middle].version < version { low = middle + 1 } else { high = middle - 1 }
            }
            return false
        }
    }

    init(
        index: KeyIndex, snapshot: IndexSnapshot, freshness: StoreFreshness, client: PostgresClient,
        location: PostgresLocation, replica: Int64, auditWriter: AuditWriter, clock: any WallClock, logger: Logger
    ) {
        self.index = index
        self.applied = Mutex(Applied(version: snapshot.version, history: snapshot.history))
        self.freshness = freshness
        self.client = client
        self.location = location
        self.replica = replica
        self.auditWriter = auditWriter
        self.clock = clock
        self.logger = logger
    }

    var appliedVersion: Int64 { applied.withLock { $0.version } }

    /// The database history the index follows.
    var history: DatabaseHistory { applied.withLock { $0.history } }

    func start() {
        tasks.withLock { tasks in
            tasks = [
                Task { await self.listen() },
                Task { await self.poll() },
            ]
        }
    }

    func stop() async {
        let running = tasks.withLock { tasks in
            defer { tasks = [] }
            return tasks
        }
        for task in running { task.cancel() }
        if let connection = listener.withLock({ $0 }) { try? await connection.close() }
        for task in running { await task.value }
    }

    /// A mutation of this replica committed `changes` (ascending versions): applies them now when
    /// they follow what is applied, else catches up first. Should the database be gone right after
    /// the commit, they are applied anyway, out of order (the in-order catch-up applies them again,
    /// and until the database is seen to hold them they are checked as the newest applied is):
    /// this replica never answers from a state older than its own committed change.
    func applyOwn(_ changes: [ChangeRows.Change]) async {
        guard let first = changes.first, let last = changes.last else { return }
        let done = applied.withLock { applied -> Bool in
            if applied.version >= last.version { return applied.applied(last.version, keyID: last.keyID) }
            guard applied.version == first.version - 1 else { return false }
            index.apply(changes.map(\.edit))
            applied.version = last.version
            applied.remember(changes)
            return true
        }
        if done { return }
        do { try await catchUp() } catch {
            logger.warning("change feed: catching up after a commit failed", metadata: ["error": "\(error)"])
        }
        applied.withLock { applied in
            guard applied.version < last.version else { return }
            index.apply(changes.map(\.edit))
            applied.unconfirmed.append(contentsOf: changes)
        }
    }

    /// Reads and applies every change after the applied version, then confirms the index as
    /// current as of the time this began. The first page also says whether the database holds
    /// what is applied (``HistoryRows/probeColumnsSQL``, no round trip of its own); when it does
    /// not, every key is loaded again instead.
    func catchUp() async throws {
        if freshness.isOutrun { throw StoreError.outrun }
        if let running = reload.withLock({ $0 }) { try await running.value }
        let startedAtMS = clock.nowMS()
        let catalog = index.catalog
        let client = client
        let (known, appliedVersions) = applied.withLock { applied in
            (applied.history, (applied.version > 0 ? [applied.version] : []) + applied.unconfirmed.map(\.version))
        }
        var anchors = appliedVersions
        var probed = false
        while true {
            let from = appliedVersion
            let page = try await withTimeout(
                .seconds(2), timeoutError: .unreachable(server: location.description, message: "no answer within 2 s")
            ) { [anchors] in
                try await ChangeRows.since(from, anchors: anchors, limit: Self.pageSize, catalog: catalog, on: client)
            }
            if !probed {
                // The first page says whether the database still holds what is applied.
                if !page.missing.isEmpty || !page.history.isSameDatabase(as: known) {
                    try await reloadIndex(found: page.history, missing: page.missing)
                    return
                }
                confirm(page.history, holding: anchors)
                (probed, anchors) = (true, [])
            }
            if page.outrun {
                if freshness.markOutrun() {
                    logger.critical(
                        "change feed: changes this replica missed were pruned from the change log; checks fail closed until it is restarted",
                        metadata: ["database": "\(location)", "appliedVersion": "\(from)"])
                }
                throw StoreError.outrun
            }
            applied.withLock { applied in
                let fresh = page.changes.drop { $0.version <= applied.version }
                guard let last = fresh.last else { return }
                index.apply(fresh.map(\.edit))
                applied.version = last.version
                applied.remember(fresh)
            }
            if page.changes.count < Self.pageSize { break }
        }
        freshness.confirm(atMS: startedAtMS)
        freshness.setVersionsBehind(
            ChangeVersion.distance(from: appliedVersion, to: announced.load(ordering: .relaxed)))
    }

    /// The database holds `anchors` (applied versions): own changes among them are confirmed, and
    /// a new timeline (a failover that lost nothing this replica applied) is logged and followed.
    private func confirm(_ history: DatabaseHistory, holding anchors: [Int64]) {
        applied.withLock { applied in
            applied.unconfirmed.removeAll { anchors.contains($0.version) }
            guard history.timeline != 0, history.timeline != applied.history.timeline else { return }
            logger.notice(
                "change feed: the database is on another timeline (a failover); it holds every change this replica applied",
                metadata: [
                    "database": "\(location)", "from": "\(applied.history)", "to": "\(history)",
                    "appliedVersion": "\(applied.version)",
                ])
            applied.history = history
        }
    }

    /// Loads every key again after the database was found not to hold what this replica applied
    /// (`missing`, among the versions asked about) or to be another database (`found`), one
    /// reload at a time; checks fail closed until it is done.
    private func reloadIndex(found: DatabaseHistory, missing: [Int64]) async throws {
        let task = reload.withLock { running in
            if let running { return running }
            let task = Task {
                defer { self.reload.withLock { $0 = nil } }
                try await self.performReload(found: found, missing: missing)
            }
            running = task
            return task
        }
        try await task.value
    }

    private func performReload(found: DatabaseHistory, missing: [Int64]) async throws {
        freshness.beginReload()
        let (known, remembered) = applied.withLock { ($0.history, $0.recent + $0.unconfirmed) }
        logger.error(
            "change feed: the database no longer holds changes this replica applied, or is another database; checks fail closed while every key is loaded again",
            metadata: [
                "database": "\(location)", "followed": "\(known)", "found": "\(found)",
                "missingVersions": "\(missing.map(String.init).joined(separator: " "))",
            ])
        let client = client
        let (catalog, clock, logger) = (index.catalog, clock, logger)
        let (snapshot, lostVersions) = try await withTimeout(
            .seconds(60), timeoutError: .unreachable(server: location.description, message: "no answer within 60 s")
        ) {
            let lost = try await HistoryRows.probe(remembered.map(\.version), on: client).missing
            let snapshot = try await client.withConnection {
                try await IndexSnapshot.read($0, client: client, catalog: catalog, clock: clock, logger: logger)
            }
            return (snapshot, Set(lost))
        }
        var seen: Set<Int64> = []
        let lost = remembered.filter { lostVersions.contains($0.version) && seen.insert($0.version).inserted }
            .sorted { $0.version < $1.version }
        applied.withLock { applied in
            index.replaceAll(with: snapshot.edits)
            applied = Applied(version: snapshot.version, history: snapshot.history)
        }
        announced.store(0, ordering: .relaxed)
        freshness.confirm(atMS: snapshot.startedAtMS)
        freshness.endReload(changesLost: lost.count)
        log(lost: lost, from: known, to: snapshot)
        await record(lost: lost)
    }

    /// Logs the changes a rewritten history lost, at error level, each of the first
    /// ``loggedLostChanges``.
    private func log(lost: [ChangeRows.Change], from known: DatabaseHistory, to snapshot: IndexSnapshot) {
        for change in lost.prefix(Self.loggedLostChanges) {
            logger.error(
                "change feed: a change this replica applied is not in the database: make it again",
                metadata: [
                    "key": "\(change.keyID)", "name": "\(change.keyName)", "change": "\(change.summary)",
                    "version": "\(change.version)", "timeline": "\(ChangeVersion.timeline(of: change.version))",
                ])
        }
        logger.error(
            "change feed: every key loaded again; \(lost.count) applied changes were lost (those remembered: the newest \(Self.rememberedChanges))",
            metadata: [
                "database": "\(location)", "followed": "\(known)", "now": "\(snapshot.history)",
                "version": "\(snapshot.version)", "keys": "\(snapshot.keyCount)",
            ])
    }

    /// Records each lost change as a `key.change_lost` event (history), so that `apikey audit`
    /// and the admin API list them; a failure is logged (the log holds them too).
    private func record(lost: [ChangeRows.Change]) async {
        guard !lost.isEmpty else { return }
        let now = clock.nowMS()
        let events = lost.map { change in
            AuditRecord(
                seq: auditWriter.takeSeq(atMS: now), atMS: now, action: .keyChangeLost, keyID: change.keyID,
                keyName: change.keyName, actor: "replica \(replica)",
                detail:
                    "change \(change.version) (timeline \(ChangeVersion.timeline(of: change.version))): \(change.summary); "
                    + "applied by this replica, then not in the database when its history was rewritten: make it again")
        }
        let logger = logger
        do {
            try await withTimeout(
                .seconds(10), timeoutError: .unreachable(server: location.description, message: "no answer within 10 s")
            ) { [client] in
                try await client.withConnection { connection in
                    try await connection.withTransaction(logger: logger) {
                        try await AuditChainRows.append(events, on: $0, logger: logger)
                    }
                }
            }
        } catch {
            logger.error(
                "change feed: could not record the lost changes in the audit trail (they are in this log)",
                metadata: ["error": "\(StoreError.postgres(error, server: location.description))"])
        }
    }

    private func listen() async {
        while !Task.isCancelled, !freshness.isOutrun {
            do {
                var configuration = try location.connectionConfiguration()
                configuration.options.additionalStartupParameters = [("application_name", "apikeyd-listener")]
                let connection = try await PostgresConnection.connect(
                    configuration: configuration, id: 1, logger: logger)
                listener.withLock { $0 = connection }
                defer { listener.withLock { $0 = nil } }
                do {
                    try await connection.listen(on: PostgresSchema.changeChannel) { notifications in
                        try await self.catchUp()
                        self.report(listening: true)
                        for try await notification in notifications {
                            guard let version = Int64(notification.payload) else { continue }
                            self.announced.raise(to: version)
                            if version > self.appliedVersion { try await self.catchUp() }
                        }
                    }
                } catch {
                    try? await connection.close()
                    throw error
                }
                try? await connection.close()
            } catch {
                if !Task.isCancelled, !freshness.isOutrun { report(listening: false, error: error) }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    private func poll() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: Self.pollInterval)
            if Task.isCancelled { break }
            do {
                try await catchUp()
                report(reachable: true)
                try await pruneIfDue()
            } catch {
                if !freshness.isOutrun { report(reachable: false, error: error) }
            }
            report(stale: freshness.isStale(nowMS: clock.nowMS()))
        }
    }

    /// Prunes the change log when this replica has not done so for ``pruneIntervalMS``.
    private func pruneIfDue() async throws {
        let now = clock.nowMS()
        guard now - prunedAtMS.load(ordering: .relaxed) >= Self.pruneIntervalMS else { return }
        prunedAtMS.store(now, ordering: .relaxed)
        let pruned = try await prune(nowMS: now)
        if pruned > 0 { logger.info("change feed: pruned the change log", metadata: ["changes": "\(pruned)"]) }
    }

    /// Deletes the changes older than ``retentionMS`` at `nowMS` but the newest `keep`; returns how many.
    func prune(nowMS: Int64, keep: Int64 = keptChanges) async throws -> Int64 {
        let client = client
        return try await withTimeout(
            .seconds(10), timeoutError: .unreachable(server: location.description, message: "no answer within 10 s")
        ) { try await ChangeRows.prune(before: nowMS - Self.retentionMS, keep: keep, on: client) }
    }

    /// Logs a change of the feed's state (never a repeat of the same state).
    private func report(reachable: Bool? = nil, stale: Bool? = nil, listening: Bool? = nil, error: (any Error)? = nil) {
        let lag = "\(freshness.lagMS(nowMS: clock.nowMS())) ms"
        let metadata: Logger.Metadata = [
            "database": "\(location)", "lag": "\(lag)", "versionsBehind": "\(freshness.versionsBehind)",
            "error": "\(error.map { "\(StoreError.postgres($0, server: location.description))" } ?? "")",
        ]
        reported.withLock { state in
            if let reachable, reachable != state.reachable {
                state.reachable = reachable
                if reachable {
                    logger.notice("change feed: database reachable again, caught up", metadata: metadata)
                } else {
                    logger.warning(
                        "change feed: cannot reach the database; answering checks from the last state for at most \(freshness.maxStalenessMS) ms",
                        metadata: metadata)
                }
            }
            if let stale, stale != state.stale {
                state.stale = stale
                if stale {
                    logger.error(
                        "change feed: past the staleness bound; checks fail closed (UNAVAILABLE)", metadata: metadata)
                } else {
                    logger.notice("change feed: within the staleness bound again; serving checks", metadata: metadata)
                }
            }
            if let listening, listening != state.listening {
                state.listening = listening
                if listening {
                    logger.info("change feed: listening", metadata: metadata)
                } else {
                    logger.warning(
                        "change feed: listener lost; reconnecting (the poll covers meanwhile)", metadata: metadata)
                }
            }
        }
    }
}
