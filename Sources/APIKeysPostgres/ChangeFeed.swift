import APIKeysCore
import APIKeysStore
import Logging
import PostgresNIO
import Synchronization

/// Keeps one replica's index current with the database's change log.
///
/// Changes are applied in version order, each batch as one step of the index (``KeyIndex/apply(_:)``).
/// They arrive three ways: the replica's own mutations (``applyOwn(_:versions:)``, before the call
/// returns), a `LISTEN` on a dedicated connection (not a pooled one) that catches up on every
/// `NOTIFY`, and a poll every ``pollInterval`` that bounds the cost of a lost notification. Every
/// successful catch-up confirms the index as current as of the time it started
/// (``StoreFreshness``); after a reconnect the listener listens again, then catches up from the
/// last version applied.
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

    private let index: KeyIndex
    /// The highest version applied; changes are applied under this lock, in order.
    private let applied: Mutex<Int64>
    /// The highest version announced by a NOTIFY.
    private let announced = Atomic<Int64>(0)
    private let client: PostgresClient
    private let location: PostgresLocation
    private let clock: any WallClock
    private let logger: Logger
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let listener = Mutex<PostgresConnection?>(nil)
    /// What was last logged about the database and the bound, so that changes are logged once.
    private let reported = Mutex<(reachable: Bool, stale: Bool, listening: Bool)>((true, false, false))
    /// When this replica last pruned the change log.
    private let prunedAtMS = Atomic<Int64>(0)

    init(
        index: KeyIndex, appliedVersion: Int64, freshness: StoreFreshness, client: PostgresClient,
        location: PostgresLocation, clock: any WallClock, logger: Logger
    ) {
        self.index = index
        self.applied = Mutex(appliedVersion)
        self.freshness = freshness
        self.client = client
        self.location = location
        self.clock = clock
        self.logger = logger
    }

    var appliedVersion: Int64 { applied.withLock { $0 } }

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

    /// A mutation of this replica committed `writes` as `versions`: applies them now when they
    /// follow what is applied, else catches up first. Should the database be gone right after the
    /// commit, the writes are applied anyway (out of order; the in-order catch-up applies them
    /// again): this replica never answers from a state older than its own committed change.
    func applyOwn(_ writes: [KeyWrite], versions: ClosedRange<Int64>) async {
        let done = applied.withLock { applied -> Bool in
            if applied >= versions.upperBound { return true }
            guard applied == versions.lowerBound - 1 else { return false }
            index.apply(writes)
            applied = versions.upperBound
            return true
        }
        if done { return }
        do { try await catchUp() } catch {
            logger.warning("change feed: catching up after a commit failed", metadata: ["error": "\(error)"])
        }
        if appliedVersion < versions.upperBound { index.apply(writes) }
    }

    /// Reads and applies every change after the applied version, then confirms the index as
    /// current as of the time this began.
    func catchUp() async throws {
        if freshness.isOutrun { throw StoreError.outrun }
        let startedAtMS = clock.nowMS()
        let catalog = index.catalog
        while true {
            let from = appliedVersion
            let client = client
            let (changes, outrun) = try await withTimeout(
                .seconds(2), timeoutError: .unreachable(server: location.description, message: "no answer within 2 s")
            ) { try await ChangeRows.since(from, limit: Self.pageSize, catalog: catalog, on: client) }
            if outrun {
                if freshness.markOutrun() {
                    logger.critical(
                        "change feed: changes this replica missed were pruned from the change log; checks fail closed until it is restarted",
                        metadata: ["database": "\(location)", "appliedVersion": "\(from)"])
                }
                throw StoreError.outrun
            }
            applied.withLock { applied in
                let fresh = changes.filter { $0.version > applied }
                guard let last = fresh.last else { return }
                index.apply(fresh.map(\.edit))
                applied = last.version
            }
            if changes.count < Self.pageSize { break }
        }
        freshness.confirm(atMS: startedAtMS)
        freshness.setVersionsBehind(max(0, announced.load(ordering: .relaxed) - appliedVersion))
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
