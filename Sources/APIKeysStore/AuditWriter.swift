import APIKeysCore
import Dispatch
import Foundation
import Logging
import Synchronization

/// Writes `api.request` events in batches on a thread of its own, with its own connection, and
/// numbers every audit event.
///
/// A check only appends to a bounded in-memory queue (never waits on the disk); the event gets its
/// seq there, under the queue's lock, so the queue is in seq order. The writer thread takes the
/// whole queue every `flushInterval` (or as soon as `batchSize` events wait), stores it as
/// ``APIRequestBatchTable`` rows in one transaction and raises the keys' last-used times in the
/// same transaction. When the queue is full, ``enqueue(_:)`` refuses the event: the caller fails
/// the check closed rather than answer a request it cannot audit. ``close()`` writes everything
/// queued before returning.
final class AuditWriter: Sendable {
    private struct State {
        var queue: [AuditRecord] = []
        /// The seq of the next event, admin or api.
        var nextSeq: UInt64
        /// The time of the last event queued: queued times never go back (see ``enqueue(_:)``).
        var lastAtMS: Int64 = 0
        var enqueued = 0
        var written = 0
        /// When events began waiting, or the writer last committed some: the base of ``stalledFor``.
        var progressAt = ContinuousClock.now
        var closing = false
        /// While closing: when to stop retrying a failing write and give its events up.
        var giveUpAt: ContinuousClock.Instant = .now
        /// Events given up at close because the disk kept refusing them.
        var unwritten = 0
        var finished = false
        /// Callers of ``flush()`` or ``close(timeout:)`` waiting for `written` to reach a count
        /// (`Int.max`: the writer's end).
        var waiters: [(target: Int, wake: Waiter)] = []
        /// Set by ``flush()``: write aggregated groups now, not when their second is over.
        var drainAggregates = false
        /// Tests only: take nothing from the queue, as a writer stuck on a slow disk would.
        var paused = false
        /// Tests only: a disk-full simulation for the writer's connection to apply.
        var forbidGrowth: Bool?
        /// Prunes asked for by ``pruneNow()`` and prunes done since (each waiter waits for a count).
        var prunesAsked = 0
        var prunesDone = 0
        var pruneWaiters: [(target: Int, wake: Waiter)] = []
    }

    let capacity: Int
    private let batchSize: Int
    private let flushInterval: DispatchTimeInterval
    private let state: Mutex<State>
    private let wake = DispatchSemaphore(value: 0)
    private let connection: SQLiteConnection
    private let mode: AuditMode
    /// Events older than this are pruned; 0 = kept forever.
    let retentionMS: Int64
    private let pruneIntervalMS: Int64
    private let clock: any WallClock
    private let logger: Logger

    /// `lastSeq`: the highest seq already recorded; `lastAtMS`: the time of the last api.request
    /// stored (times stay non-decreasing across restarts, even if the clock went back meanwhile).
    init(
        connection: SQLiteConnection, lastSeq: UInt64, lastAtMS: Int64, mode: AuditMode = .full, clock: any WallClock,
        capacity: Int = KeyService.defaultAuditQueueCapacity, batchSize: Int = 1_000, flushInterval: DispatchTimeInterval = .milliseconds(5),
        retentionMS: Int64 = 0, pruneIntervalMS: Int64 = 60_000, logger: Logger
    ) {
        self.connection = connection
        self.state = Mutex(State(nextSeq: lastSeq + 1, lastAtMS: lastAtMS))
        // The writer appends to the audit tables and updates last-used times all day: a 32 MB page
        // cache keeps their hot pages in memory instead of re-reading them with a syscall per miss
        // (measured with one row per check; kept for the batch tables and the keys table).
        try? connection.execute("PRAGMA cache_size = -32000")
        self.mode = mode
        self.retentionMS = retentionMS
        self.pruneIntervalMS = pruneIntervalMS
        // Debian's SQLite overwrites deleted content with zeros (SECURE_DELETE), doubling the I/O
        // of pruning; audit events hold no secret, so only free what costs no extra write.
        try? connection.execute("PRAGMA secure_delete = FAST")
        self.clock = clock
        self.capacity = capacity
        self.batchSize = batchSize
        self.flushInterval = flushInterval
        self.logger = logger
        let thread = Thread { [self] in run() }
        thread.start()
    }

    /// A seq for an event recorded elsewhere (admin events, in their own transaction).
    func takeSeq() -> UInt64 {
        state.withLock { state in
            defer { state.nextSeq += 1 }
            return state.nextSeq
        }
    }

    /// Queues `event` with the next seq; false when the queue is full or the writer is closing.
    /// An event stamped earlier than the one queued before it (a thread that was descheduled
    /// between reading the clock and queueing, or a clock stepped back) takes that event's time,
    /// so that times never decrease with seq.
    func enqueue(_ event: consuming AuditRecord) -> Bool {
        var event = event
        let (accepted, full) = state.withLock { state -> (Bool, Bool) in
            guard !state.closing, state.queue.count < capacity else { return (false, false) }
            event.seq = state.nextSeq
            state.nextSeq += 1
            event.atMS = max(event.atMS, state.lastAtMS)
            state.lastAtMS = event.atMS
            state.queue.append(event)
            if state.enqueued == state.written { state.progressAt = .now }
            state.enqueued += 1
            return (true, state.queue.count == batchSize)
        }
        if full { wake.signal() }
        return accepted
    }

    /// Events in the queue, and events committed since the writer started.
    var counts: (queued: Int, written: Int) { state.withLock { ($0.queue.count, $0.written) } }

    /// How long events have been waiting without the writer committing any; zero when none wait.
    var stalledFor: Duration {
        state.withLock { state in state.enqueued == state.written ? .zero : ContinuousClock.now - state.progressAt }
    }

    /// Tests only: stop (or resume) taking events from the queue.
    func setPaused(_ paused: Bool) {
        state.withLock { $0.paused = paused }
        wake.signal()
    }

    /// Tests only: the writer's connection may not grow the database (SQLITE_FULL), or may again.
    func forbidGrowth(_ forbid: Bool) {
        state.withLock { $0.forbidGrowth = forbid }
        wake.signal()
    }

    /// Prunes expired events now (on the writer's thread) and waits until it has; tools and
    /// tests only (blocks its thread).
    func pruneNowBlocking() {
        let semaphore = DispatchSemaphore(value: 0)
        let ready = state.withLock { state -> Bool in
            guard !state.finished else { return true }
            state.prunesAsked += 1
            state.pruneWaiters.append((state.prunesAsked, .thread(semaphore)))
            return false
        }
        wake.signal()
        if !ready { semaphore.wait() }
    }

    /// True once ``close()`` has begun: no event is taken any more.
    var isClosing: Bool { state.withLock { $0.closing } }

    /// True when more than half the queue is taken: time for callers to stop taking new work.
    var isUnderPressure: Bool { state.withLock { $0.queue.count > capacity / 2 } }

    /// Someone waiting for the writer: a task (never blocked) or a thread outside the executor.
    enum Waiter: Sendable {
        case task(CheckedContinuation<Void, Never>)
        case thread(DispatchSemaphore)

        func resume() {
            switch self {
            case .task(let continuation): continuation.resume()
            case .thread(let semaphore): semaphore.signal()
            }
        }
    }

    /// Waits until every event queued before the call is committed (aggregated groups included),
    /// or the writer has ended.
    func flush() async {
        await withCheckedContinuation { continuation in
            if let waiter = register(.task(continuation), untilWritten: nil) { waiter.resume() }
        }
    }

    /// ``flush()`` for synchronous callers (tests, tools); never call it on a task's executor.
    func flushBlocking() {
        let semaphore = DispatchSemaphore(value: 0)
        register(.thread(semaphore), untilWritten: nil)?.resume()
        semaphore.wait()
    }

    /// Adds `waiter` for the events queued so far (or, with `untilWritten`, that count); returns
    /// it when there is nothing to wait for.
    @discardableResult
    private func register(_ waiter: Waiter, untilWritten: Int?) -> Waiter? {
        let ready = state.withLock { state -> Bool in
            let target = untilWritten ?? state.enqueued
            if state.finished || state.written >= target { return true }
            state.drainAggregates = true
            state.waiters.append((target, waiter))
            return false
        }
        wake.signal()
        return ready ? waiter : nil
    }

    /// Writes what is queued, stops the thread and closes its connection, and returns how many
    /// events it had to give up: when the disk keeps refusing them, the writer retries until
    /// `timeout` has passed. Idempotent (a second call waits for the first and returns 0).
    func close(timeout: Duration) async -> Int {
        guard beginClosing(timeout: timeout) else { return 0 }
        await withCheckedContinuation { continuation in
            if let waiter = register(.task(continuation), untilWritten: .max) { waiter.resume() }
        }
        return state.withLock { $0.unwritten }
    }

    /// ``close(timeout:)`` for synchronous callers (tools and tests, not a task's executor).
    @discardableResult
    func closeBlocking(timeout: Duration = .seconds(10)) -> Int {
        guard beginClosing(timeout: timeout) else { return 0 }
        let semaphore = DispatchSemaphore(value: 0)
        register(.thread(semaphore), untilWritten: .max)?.resume()
        semaphore.wait()
        return state.withLock { $0.unwritten }
    }

    private func beginClosing(timeout: Duration) -> Bool {
        let first = state.withLock { state in
            defer { state.closing = true }
            if !state.closing { state.giveUpAt = .now + timeout }
            return !state.closing
        }
        wake.signal()
        return first
    }

    /// After a commit (or at the end): wakes the waiters whose count has been reached.
    private func wakeWaiters() {
        let ready = state.withLock { state -> [Waiter] in
            let reached = state.finished ? state.waiters : state.waiters.filter { $0.target <= state.written }
            state.waiters.removeAll { state.finished || $0.target <= state.written }
            return reached.map(\.wake)
        }
        for waiter in ready { waiter.resume() }
    }

    private func run() {
        // Below the event loops: when the cores are busy, answering checks comes before writing
        // their audit rows (which may lag, never be lost), and check latency stays flat.
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)  // on Linux: this thread only
        // Named from the thread itself: Foundation's `Thread.name` did not reach the kernel's name
        // here, so `top -H` and `perf` showed it as "oot.default-qos" (pthread_setname_np is not
        // visible to Swift on glibc). Best effort; Linux allows 15 bytes.
        #if os(Linux)
            if let comm = fopen("/proc/thread-self/comm", "w") {
                fputs("audit-writer", comm)
                fclose(comm)
            }
        #endif
        var aggregator = AuditAggregator()
        var nextPruneAtMS: Int64 = 0
        while true {
            _ = wake.wait(timeout: .now() + flushInterval)
            applyDiskSimulation()
            let (batch, closing, drainAll) = state.withLock { state -> ([AuditRecord], Bool, Bool) in
                if state.paused && !state.closing { return ([], false, false) }
                defer {
                    state.queue.removeAll(keepingCapacity: true)
                    state.drainAggregates = false
                }
                return (state.queue, state.closing, state.drainAggregates)
            }
            var individual = batch
            var summaries: [AuditRecord] = []
            if mode == .aggregated {
                individual = batch.compactMap { aggregator.absorb($0) }
                summaries = aggregator.drain(before: closing || drainAll ? nil : clock.nowMS())
            }
            if !batch.isEmpty || !summaries.isEmpty { write(individual, summaries: summaries, lastUsedFrom: batch) }
            wakeWaiters()
            let (asked, done) = state.withLock { ($0.prunesAsked, $0.prunesDone) }
            let due = retentionMS > 0 && clock.nowMS() >= nextPruneAtMS
            if !closing && (due || asked > done) {
                if retentionMS > 0 {
                    pruneExpired()
                    nextPruneAtMS = clock.nowMS() + pruneIntervalMS
                }
                wakePruneWaiters(done: asked)
            }
            if closing && state.withLock({ $0.queue.isEmpty }) && aggregator.isEmpty { break }
        }
        connection.close()
        state.withLock { $0.finished = true }
        wakeWaiters()
        wakePruneWaiters(done: .max)
    }

    /// Deletes what is older than the retention, a step per transaction, each step with its
    /// `audit.pruned` event, then gives the freed pages back. A failure (a full disk) is logged
    /// and tried again at the next interval.
    private func pruneExpired() {
        let cutoff = clock.nowMS() - retentionMS
        do {
            var steps = 0
            while true {
                let pruned = try connection.transaction {
                    let pruned = try AuditRetention.pruneStep(olderThan: cutoff, in: connection)
                    if !pruned.isEmpty {
                        let event = AuditRetention.event(
                            for: pruned, cutoffMS: cutoff, retentionMS: retentionMS, seq: takeSeq(), nowMS: clock.nowMS())
                        try AuditTable.insert(event, in: connection)
                    }
                    return pruned
                }
                if pruned.isEmpty { break }
                steps += 1
                logger.info(
                    "audit trail pruned",
                    metadata: ["events": "\(pruned.events)", "batches": "\(pruned.batches)", "rows": "\(pruned.rows)"])
            }
            if steps > 0 { try AuditRetention.reclaimSpace(in: connection) }
        } catch {
            logger.error("audit trail not pruned, trying again later", metadata: ["error": "\(error)"])
        }
    }

    private func wakePruneWaiters(done: Int) {
        let ready = state.withLock { state -> [Waiter] in
            state.prunesDone = max(state.prunesDone, min(done, state.prunesAsked))
            let reached = state.pruneWaiters.filter { $0.target <= done }
            state.pruneWaiters.removeAll { $0.target <= done }
            return reached.map(\.wake)
        }
        for waiter in ready { waiter.resume() }
    }

    /// Tests only: applies a pending ``forbidGrowth(_:)`` on the writer's own thread.
    private func applyDiskSimulation() {
        let pending = state.withLock { state in
            defer { state.forbidGrowth = nil }
            return state.forbidGrowth
        }
        if let pending {
            do { try connection.forbidGrowth(pending) } catch {
                logger.error("disk simulation not applied", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Commits `individual` events (in seq order) as batches, aggregated `summaries` as rows, and
    /// the last-used times of the checks in `batch`, retrying while the disk refuses them: events
    /// are never dropped, except at close once its timeout has passed (they are then counted).
    private func write(_ individual: [AuditRecord], summaries: [AuditRecord], lastUsedFrom batch: [AuditRecord]) {
        let lastUsed = APIRequestBatchTable.lastUse(byKeyIn: batch[...])
        var attempt = 0
        while true {
            do {
                try connection.transaction {
                    try APIRequestBatchTable.insert(individual, in: connection)
                    let insert = try AuditTable.insertStatement(in: connection)
                    for event in summaries { try AuditTable.insert(event, using: insert) }
                    try KeyTable.touch(lastUsed, in: connection)
                }
                state.withLock { state in
                    state.written += batch.count
                    state.progressAt = .now
                }
                return
            } catch {
                attempt += 1
                let givingUp = state.withLock { state -> Bool in
                    guard state.closing, ContinuousClock.now >= state.giveUpAt else { return false }
                    state.unwritten += individual.count + summaries.count
                    return true
                }
                logger.error(
                    givingUp ? "audit batch not written, shutting down: events lost" : "audit batch not written, retrying",
                    metadata: [
                        "events": "\(individual.count + summaries.count)", "attempt": "\(attempt)", "error": "\(error)",
                    ])
                if givingUp { return }
                _ = wake.wait(timeout: .now() + .milliseconds(100))
                applyDiskSimulation()
            }
        }
    }
}
