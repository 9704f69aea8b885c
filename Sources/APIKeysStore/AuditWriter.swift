import APIKeysCore
import Dispatch
import Foundation
import Logging
import Synchronization

/// Writes `api.request` events in batches on a thread of its own, to its store's ``AuditSink``,
/// and numbers every audit event (``AuditSequence``).
///
/// A check only appends to a bounded in-memory queue (never waits on the disk); the event gets its
/// seq there, under the queue's lock, so the queue is in seq order. The writer thread takes the
/// whole queue every `flushInterval` (or as soon as `batchSize` events wait) and hands it to the
/// sink, which stores it and raises the keys' last-used times in one transaction. When the queue is full, ``enqueue(_:)`` refuses the event: the caller fails
/// the check closed rather than answer a request it cannot audit. ``close()`` writes everything
/// queued before returning.
package final class AuditWriter: Sendable {
    private struct State {
        var queue: [AuditRecord] = []
        /// Numbers events, admin or api.
        var seqs: AuditSequence
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
        var waiters: [(target: Int, pass: Int, wake: Waiter)] = []
        /// Passes of the writer that drained every group (aggregated, unknown keys) begun and
        /// finished: a flush waits for one begun after it, since its events may all be counted
        /// as written while their groups still wait.
        var drainPassesBegun = 0
        var drainPassesDone = 0
        /// Set by ``flush()``: write aggregated groups now, not when their second is over.
        var drainAggregates = false
        /// Tests only: take nothing from the queue, as a writer stuck on a slow disk would.
        var paused = false
        /// Tests only: a disk-full simulation for the writer's connection to apply.
        var forbidGrowth: Bool?
        /// The disk's free bytes at the last look (nil: not known), and checks of unknown keys
        /// dropped since start because it was below ``minFreeDiskBytes``.
        var freeDiskBytes: Int64?
        var shedUnknownKeyChecks = 0
        /// Prunes asked for by ``pruneNow()`` and prunes done since (each waiter waits for a count).
        var prunesAsked = 0
        var prunesDone = 0
        var pruneWaiters: [(target: Int, wake: Waiter)] = []
    }

    package let capacity: Int
    private let batchSize: Int
    private let flushInterval: DispatchTimeInterval
    private let state: Mutex<State>
    private let wake = DispatchSemaphore(value: 0)
    private let sink: any AuditSink
    private let mode: AuditMode
    /// Events older than this are pruned; 0 = kept forever.
    package let retentionMS: Int64
    private let pruneIntervalMS: Int64
    private let clock: any WallClock
    private let logger: Logger
    /// Below this many free bytes on the sink's disk, checks of unknown keys are no longer written.
    package let minFreeDiskBytes: Int64

    /// `seqs`: how events are numbered, continuing after what is stored; `lastAtMS`: the time of
    /// the last api.request stored (times stay non-decreasing across restarts, even if the clock
    /// went back meanwhile).
    package init(
        sink: any AuditSink, seqs: AuditSequence, lastAtMS: Int64, mode: AuditMode = .full, clock: any WallClock,
        capacity: Int = KeyService.defaultAuditQueueCapacity, batchSize: Int = 1_000,
        flushInterval: DispatchTimeInterval = .milliseconds(5), retentionMS: Int64 = 0, pruneIntervalMS: Int64 = 60_000,
        minFreeDiskBytes: Int64 = KeyService.defaultMinFreeDiskBytes, logger: Logger
    ) {
        self.minFreeDiskBytes = minFreeDiskBytes
        self.sink = sink
        self.state = Mutex(State(seqs: seqs, lastAtMS: lastAtMS))
        self.mode = mode
        self.retentionMS = retentionMS
        self.pruneIntervalMS = pruneIntervalMS
        self.clock = clock
        self.capacity = capacity
        self.batchSize = batchSize
        self.flushInterval = flushInterval
        self.logger = logger
        let thread = Thread { [self] in run() }
        thread.start()
    }

    /// A seq for an event stamped `atMS` and recorded elsewhere (admin events, in their own
    /// transaction).
    package func takeSeq(atMS: Int64) -> UInt64 {
        state.withLock { $0.seqs.next(atMS: $0.lastAtMS > atMS ? $0.lastAtMS : atMS) }
    }

    /// Queues `event` with the next seq; false when the queue is full or the writer is closing.
    /// An event stamped earlier than the one queued before it (a thread that was descheduled
    /// between reading the clock and queueing, or a clock stepped back) takes that event's time,
    /// so that times never decrease with seq.
    package func enqueue(_ event: consuming AuditRecord) -> Bool {
        var event = event
        let (accepted, full) = state.withLock { state -> (Bool, Bool) in
            guard !state.closing, state.queue.count < capacity else { return (false, false) }
            event.atMS = max(event.atMS, state.lastAtMS)
            state.lastAtMS = event.atMS
            event.seq = state.seqs.next(atMS: event.atMS)
            state.queue.append(event)
            if state.enqueued == state.written { state.progressAt = .now }
            state.enqueued += 1
            return (true, state.queue.count == batchSize)
        }
        if full { wake.signal() }
        return accepted
    }

    /// Events in the queue, and events committed since the writer started.
    package var counts: (queued: Int, written: Int) { state.withLock { ($0.queue.count, $0.written) } }

    /// How long events have been waiting without the writer committing any; zero when none wait.
    package var stalledFor: Duration {
        state.withLock { state in state.enqueued == state.written ? .zero : ContinuousClock.now - state.progressAt }
    }

    /// Tests only: stop (or resume) taking events from the queue.
    package func setPaused(_ paused: Bool) {
        state.withLock { $0.paused = paused }
        wake.signal()
    }

    /// Tests only: the writer's connection may not grow the database (SQLITE_FULL), or may again.
    package func forbidGrowth(_ forbid: Bool) {
        state.withLock { $0.forbidGrowth = forbid }
        wake.signal()
    }

    /// Prunes expired events now (on the writer's thread) and waits until it has; tools and
    /// tests only (blocks its thread).
    package func pruneNowBlocking() {
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

    /// The disk's free bytes when the writer last looked (every second), nil when not known, and
    /// whether that is below ``minFreeDiskBytes``.
    package var disk: (freeBytes: Int64?, isLow: Bool) {
        state.withLock { state in (state.freeDiskBytes, state.freeDiskBytes.map { $0 < minFreeDiskBytes } ?? false) }
    }

    /// Checks of unknown keys not written since start because the disk was low.
    package var shedUnknownKeyChecks: Int { state.withLock { $0.shedUnknownKeyChecks } }

    /// True once ``close()`` has begun: no event is taken any more.
    package var isClosing: Bool { state.withLock { $0.closing } }

    /// True when more than half the queue is taken: time for callers to stop taking new work.
    package var isUnderPressure: Bool { state.withLock { $0.queue.count > capacity / 2 } }

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
    package func flush() async {
        await withCheckedContinuation { continuation in
            if let waiter = register(.task(continuation), untilWritten: nil) { waiter.resume() }
        }
    }

    /// ``flush()`` for synchronous callers (tests, tools); never call it on a task's executor.
    package func flushBlocking() {
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
            if state.finished || (untilWritten != nil && state.written >= target) { return true }
            state.drainAggregates = true
            state.waiters.append((target, untilWritten == nil ? state.drainPassesBegun + 1 : 0, waiter))
            return false
        }
        wake.signal()
        return ready ? waiter : nil
    }

    /// Writes what is queued, stops the thread and closes its connection, and returns how many
    /// events it had to give up: when the disk keeps refusing them, the writer retries until
    /// `timeout` has passed. Idempotent (a second call waits for the first and returns 0).
    package func close(timeout: Duration) async -> Int {
        guard beginClosing(timeout: timeout) else { return 0 }
        await withCheckedContinuation { continuation in
            if let waiter = register(.task(continuation), untilWritten: .max) { waiter.resume() }
        }
        return state.withLock { $0.unwritten }
    }

    /// ``close(timeout:)`` for synchronous callers (tools and tests, not a task's executor).
    @discardableResult
    package func closeBlocking(timeout: Duration = .seconds(10)) -> Int {
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
            let (written, passes) = (state.written, state.drainPassesDone)
            let isReached = { (waiter: (target: Int, pass: Int, wake: Waiter)) in
                waiter.target <= written && waiter.pass <= passes
            }
            let reached = state.finished ? state.waiters : state.waiters.filter(isReached)
            state.waiters.removeAll { state.finished || isReached($0) }
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
        var unknownKeys = UnknownKeySampler()
        var nextPruneAtMS: Int64 = 0
        var nextDiskLook = ContinuousClock.now
        while true {
            _ = wake.wait(timeout: .now() + flushInterval)
            applyDiskSimulation()
            if ContinuousClock.now >= nextDiskLook {
                nextDiskLook = .now + .seconds(1)
                lookAtDisk(&unknownKeys)
            }
            let (batch, closing, drainAll) = state.withLock { state -> ([AuditRecord], Bool, Bool) in
                if state.paused && !state.closing { return ([], false, false) }
                defer {
                    state.queue.removeAll(keepingCapacity: true)
                    if state.drainAggregates { state.drainPassesBegun += 1 }
                    state.drainAggregates = false
                }
                return (state.queue, state.closing, state.drainAggregates)
            }
            let shedBefore = unknownKeys.shed
            var individual = batch.compactMap { unknownKeys.absorb($0) }
            if unknownKeys.shed != shedBefore { state.withLock { $0.shedUnknownKeyChecks = unknownKeys.shed } }
            let drainBefore = closing || drainAll ? nil : clock.nowMS()
            var summaries = unknownKeys.drain(before: drainBefore)
            if mode == .aggregated {
                individual = individual.compactMap { aggregator.absorb($0) }
                summaries += aggregator.drain(before: drainBefore)
                summaries.sort { $0.seq < $1.seq }
            }
            if !batch.isEmpty || !summaries.isEmpty { write(individual, summaries: summaries, lastUsedFrom: batch) }
            if drainAll { state.withLock { $0.drainPassesDone = $0.drainPassesBegun } }
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
            if closing && state.withLock({ $0.queue.isEmpty }) && aggregator.isEmpty && unknownKeys.isEmpty { break }
        }
        sink.close()
        state.withLock { $0.finished = true }
        wakeWaiters()
        wakePruneWaiters(done: .max)
    }

    /// Reads the sink's free disk space; below ``minFreeDiskBytes`` the checks of unknown keys
    /// are shed (the first noise to go, so that real keys' events keep fitting), and the
    /// change is logged as it happens.
    private func lookAtDisk(_ unknownKeys: inout UnknownKeySampler) {
        let free = sink.freeBytes()
        let low = free.map { $0 < minFreeDiskBytes } ?? false
        if low != unknownKeys.shedding {
            if low {
                logger.error(
                    "disk space low: checks of unknown keys are no longer recorded",
                    metadata: ["freeBytes": "\(free ?? 0)", "minFreeBytes": "\(minFreeDiskBytes)"])
            } else {
                logger.notice(
                    "disk space back above the minimum: checks of unknown keys are recorded again",
                    metadata: ["freeBytes": "\(free ?? 0)", "shed": "\(unknownKeys.shed)"])
            }
        }
        unknownKeys.shedding = low
        state.withLock { $0.freeDiskBytes = free }
    }

    /// Deletes what is older than the retention, a step per transaction, each step with its
    /// `audit.pruned` event, then gives the freed pages back. A failure (a full disk) is logged
    /// and tried again at the next interval.
    private func pruneExpired() {
        let cutoff = clock.nowMS() - retentionMS
        do {
            var steps = 0
            while true {
                let pruned = try sink.pruneStep(olderThan: cutoff) { [self] pruned in
                    let now = clock.nowMS()
                    return AuditRetention.event(
                        for: pruned, cutoffMS: cutoff, retentionMS: retentionMS, seq: takeSeq(atMS: now), nowMS: now)
                }
                if pruned.isEmpty { break }
                steps += 1
                logger.info(
                    "audit trail pruned",
                    metadata: ["events": "\(pruned.events)", "batches": "\(pruned.batches)", "rows": "\(pruned.rows)"])
            }
            if steps > 0 { try sink.reclaimSpace() }
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
            do { try sink.forbidGrowth(pending) } catch {
                logger.error("disk simulation not applied", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Commits `individual` events (in seq order) as batches, aggregated `summaries` as rows, and
    /// the last-used times of the checks in `batch`, retrying while the disk refuses them: events
    /// are never dropped, except at close once its timeout has passed (they are then counted).
    private func write(_ individual: [AuditRecord], summaries: [AuditRecord], lastUsedFrom batch: [AuditRecord]) {
        let lastUsed = KeyUse.tally(batch[...])
        var attempt = 0
        while true {
            do {
                try sink.write(individual, summaries: summaries, lastUsed: lastUsed)
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
                    givingUp
                        ? "audit batch not written, shutting down: events lost" : "audit batch not written, retrying",
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

/// What one audit batch says of a key's use: the time of its last check, and how many of its
/// checks were allowed (each spent a usage credit if the key has them).
package struct KeyUse: Sendable, Hashable {
    package var lastAtMS: Int64
    package var allowed: Int64

    package init(lastAtMS: Int64, allowed: Int64) {
        self.lastAtMS = lastAtMS
        self.allowed = allowed
    }

    /// The use of each key among `events` (in queue order, where times never decrease). Events of
    /// no key (unknown secrets) count for none. Runs of one key, the common case under load, cost
    /// a comparison per event, not a hash.
    package static func tally(_ events: ArraySlice<AuditRecord>) -> [String: KeyUse] {
        var uses: [String: KeyUse] = [:]
        var run = ""
        var runUse = KeyUse(lastAtMS: 0, allowed: 0)
        func endRun() {
            guard !run.isEmpty else { return }
            if let earlier = uses[run] {
                runUse.allowed += earlier.allowed
                runUse.lastAtMS = max(runUse.lastAtMS, earlier.lastAtMS)
            }
            uses[run] = runUse
        }
        for index in events.indices where !events[index].keyID.isEmpty {
            if events[index].keyID != run {
                endRun()
                run = events[index].keyID
                runUse = KeyUse(lastAtMS: 0, allowed: 0)
            }
            runUse.lastAtMS = events[index].atMS
            if events[index].denial == nil && events[index].action == .apiRequest { runUse.allowed += 1 }
        }
        endRun()
        return uses
    }
}

/// Where an ``AuditWriter`` stores events: called on the writer's thread only, one call at a time.
package protocol AuditSink: Sendable {
    /// Stores `individual` api.request events (in seq order), aggregated `summaries`, and raises
    /// the keys' last-used times and spent usage credits (``KeyUse``, by key id), all in one
    /// transaction.
    func write(_ individual: [AuditRecord], summaries: [AuditRecord], lastUsed: [String: KeyUse]) throws
    /// Removes one step of events older than `cutoffMS` in one transaction, with the event that
    /// `record` makes of what it removed; returns what it removed (empty: nothing was left).
    func pruneStep(
        olderThan cutoffMS: Int64, recording record: @escaping @Sendable (AuditRetention.Pruned) -> AuditRecord
    ) throws
        -> AuditRetention.Pruned
    /// Gives the space freed by pruning back to the file system, where that applies.
    func reclaimSpace() throws
    /// Bytes free to this process on the file system the events are written to; nil when that
    /// is not a local file system (a database server's disk is its operator's to watch).
    func freeBytes() -> Int64?
    /// Tests only: simulates a full disk (or ends the simulation).
    func forbidGrowth(_ forbid: Bool) throws
    /// Releases the sink's connection; no call follows.
    func close()
}

/// How audit events are numbered: `seq` is unique and increases in the order events happen.
package struct AuditSequence: Sendable {
    package enum Scheme: Sendable {
        /// 1, 2, 3…: one process numbers every event of its store (SQLite).
        case dense
        /// `(milliseconds << 20) | (replica << 12) | counter`: each replica numbers its own events
        /// from its clock, so seqs are unique across up to 256 replicas (`replica` < 256) and
        /// increase with time across them, within their clocks' skew; a replica numbering more than
        /// 4,096 events in one millisecond borrows from the next one.
        case clock(replica: UInt64)
    }

    private let scheme: Scheme
    private var last: UInt64

    /// Numbers events after `last`, the highest seq the store holds (dense) or 0.
    package init(_ scheme: Scheme, after last: UInt64 = 0) {
        self.scheme = scheme
        self.last = last
    }

    /// The seq of an event stamped `atMS` (never earlier than the previous event's time).
    package mutating func next(atMS: Int64) -> UInt64 {
        switch scheme {
        case .dense:
            last += 1
        case .clock(let replica):
            let base = UInt64(max(atMS, 0)) << 20 | (replica & 0xFF) << 12
            if base > last {
                last = base
            } else if last & 0xFFF < 0xFFF {
                last += 1
            } else {
                last = ((last >> 20) + 1) << 20 | (replica & 0xFF) << 12
            }
        }
        return last
    }
}
