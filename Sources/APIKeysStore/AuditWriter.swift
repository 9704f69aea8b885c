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
///
/// An idle writer sleeps: after a pass that found nothing to do, it waits for the next event
/// (which wakes it, and is written at once), a caller, or its look at the disk once a second,
/// instead of waking every `flushInterval` for nothing. Busy, it keeps its cadence: a pass that
/// wrote something is followed by a full interval, so commits stay at most one per interval
/// (two when an event ends an idle interval).
package final class AuditWriter: Sendable {
    typealias Waiter = AuditWaiters.Waiter

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
        /// The writer sleeps past its interval (nothing queued or pending): the next event wakes it.
        var writerAsleep = false
        /// Callers of ``flush()``, ``close(timeout:)`` and ``pruneNowBlocking()`` waiting.
        var waiters = AuditWaiters()
        /// Passes of the writer that drained every group (aggregated, unknown keys) begun and
        /// finished: a flush waits for one begun after it, since its events may all be counted
        /// as written while their groups still wait.
        var drainPassesBegun = 0
        var drainPassesDone = 0
        /// Set by ``flush()``: write aggregated groups now, not when their second is over.
        var drainAggregates = false
        /// The disk's free bytes at the last look (nil: not known), and checks of unknown keys
        /// dropped since start because it was below ``minFreeDiskBytes``.
        var freeDiskBytes: Int64?
        var shedUnknownKeyChecks = 0
        /// Prunes asked for by ``pruneNowBlocking()`` and prunes done since.
        var prunesAsked = 0
        var prunesDone = 0
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
    /// Key and admin-token history (``AuditAction/isHistory``) older than this is pruned; 0 =
    /// kept forever (the default). Never shorter than ``retentionMS``.
    package let historyRetentionMS: Int64
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
        flushInterval: DispatchTimeInterval = .milliseconds(5), retentionMS: Int64 = 0, historyRetentionMS: Int64 = 0,
        pruneIntervalMS: Int64 = 60_000,
        minFreeDiskBytes: Int64 = KeyService.defaultMinFreeDiskBytes, logger: Logger
    ) {
        self.minFreeDiskBytes = minFreeDiskBytes
        self.sink = sink
        self.state = Mutex(State(seqs: seqs, lastAtMS: lastAtMS))
        self.mode = mode
        self.retentionMS = retentionMS
        self.historyRetentionMS = historyRetentionMS > 0 ? max(historyRetentionMS, retentionMS) : 0
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
        // Moved in, not copied: a copy retains each of the event's strings and arrays here
        // and releases them again on return, atomically, on objects (the key's id, the
        // request's permission list) that other threads retain and release too.
        var slot = Optional(event)
        let (accepted, wakeWriter) = state.withLock { state -> (Bool, Bool) in
            guard !state.closing, state.queue.count < capacity else { return (false, false) }
            var event = slot.take()!
            event.atMS = max(event.atMS, state.lastAtMS)
            state.lastAtMS = event.atMS
            event.seq = state.seqs.next(atMS: event.atMS)
            state.queue.append(consume event)
            if state.enqueued == state.written { state.progressAt = .now }
            state.enqueued += 1
            let wakeUp = state.writerAsleep || state.queue.count == batchSize
            state.writerAsleep = false
            return (true, wakeUp)
        }
        if wakeWriter { wake.signal() }
        return accepted
    }

    /// Events in the queue, and events committed since the writer started.
    package var counts: (queued: Int, written: Int) { state.withLock { ($0.queue.count, $0.written) } }

    /// How long events have been waiting without the writer committing any; zero when none wait.
    package var stalledFor: Duration {
        state.withLock { state in state.enqueued == state.written ? .zero : ContinuousClock.now - state.progressAt }
    }

    /// Prunes expired events now (on the writer's thread) and waits until it has; tools and
    /// tests only (blocks its thread).
    package func pruneNowBlocking() {
        let semaphore = DispatchSemaphore(value: 0)
        let ready = state.withLock { state -> Bool in
            guard !state.finished else { return true }
            state.prunesAsked += 1
            state.waiters.add(.thread(semaphore), for: .pruned(count: state.prunesAsked))
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
    package var isUnderPressure: Bool { pressure != .none }

    /// How full the queue is: more than half (``AuditPressure/behind``), more than 7/8
    /// (``AuditPressure/nearlyFull``).
    package var pressure: AuditPressure {
        let count = state.withLock { $0.queue.count }
        return count > capacity - capacity / 8 ? .nearlyFull : count > capacity / 2 ? .behind : .none
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
            let pass = untilWritten == nil ? state.drainPassesBegun + 1 : 0
            state.waiters.add(waiter, for: .written(count: target, drainPass: pass))
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

    /// After a pass of the writer (or at its end): wakes the waiters whose moment has come.
    private func wakeWaiters() {
        let ready = state.withLock { state in
            state.waiters.takeReady(
                written: state.written, drainPassesDone: state.drainPassesDone, prunesDone: state.prunesDone,
                finished: state.finished)
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
        // The queue's storage and this one trade places every pass (double buffering): taking a
        // batch neither copies its events nor makes the queue allocate again.
        var batch: [AuditRecord] = []
        var idle = false
        while true {
            // Asleep only if the queue is still empty under the lock an enqueue takes: an event
            // queued after that finds the writer asleep and wakes it.
            let asleep =
                idle
                && state.withLock { state in
                    guard state.queue.isEmpty else { return false }
                    state.writerAsleep = true
                    return true
                }
            _ = wake.wait(timeout: asleep ? Self.dispatchTime(of: nextDiskLook) : .now() + flushInterval)
            if ContinuousClock.now >= nextDiskLook {
                nextDiskLook = .now + .seconds(1)
                lookAtDisk(&unknownKeys)
            }
            let (closing, drainAll) = state.withLock { state -> (Bool, Bool) in
                state.writerAsleep = false
                swap(&state.queue, &batch)
                defer {
                    if state.drainAggregates { state.drainPassesBegun += 1 }
                    state.drainAggregates = false
                }
                return (state.closing, state.drainAggregates)
            }
            let taken = batch.count
            let lastUsed = KeyUse.tally(batch[...])
            // Filtered in place: what the sampler (and the aggregator) absorb leaves the batch,
            // the rest is written as it is; with none absorbed, nothing moves.
            let shedBefore = unknownKeys.shed
            if UnknownKeySampler.anyUnknownKeyCheck(in: batch) { batch.removeAll { unknownKeys.absorbs($0) } }
            if unknownKeys.shed != shedBefore { state.withLock { $0.shedUnknownKeyChecks = unknownKeys.shed } }
            let drainBefore = closing || drainAll ? nil : clock.nowMS()
            var summaries = unknownKeys.drain(before: drainBefore)
            if mode == .aggregated {
                batch.removeAll { aggregator.absorbs($0) }
                summaries += aggregator.drain(before: drainBefore)
                summaries.sort { $0.seq < $1.seq }
            }
            if taken > 0 || !summaries.isEmpty {
                write(batch, summaries: summaries, lastUsed: lastUsed, taken: taken)
            }
            batch.removeAll(keepingCapacity: true)
            if drainAll { state.withLock { $0.drainPassesDone = $0.drainPassesBegun } }
            wakeWaiters()
            let (asked, done) = state.withLock { ($0.prunesAsked, $0.prunesDone) }
            let due = retentionMS > 0 && clock.nowMS() >= nextPruneAtMS
            idle =
                taken == 0 && summaries.isEmpty && !drainAll && !closing && !due && asked == done
                && aggregator.isEmpty && unknownKeys.isEmpty
            if !closing && (due || asked > done) {
                if retentionMS > 0 {
                    pruneExpired()
                    nextPruneAtMS = clock.nowMS() + pruneIntervalMS
                }
                state.withLock { $0.prunesDone = max($0.prunesDone, asked) }
                wakeWaiters()
            }
            if closing && state.withLock({ $0.queue.isEmpty }) && aggregator.isEmpty && unknownKeys.isEmpty { break }
        }
        sink.close()
        state.withLock { $0.finished = true }
        wakeWaiters()
    }

    /// `instant` as a deadline for a `DispatchSemaphore`.
    private static func dispatchTime(of instant: ContinuousClock.Instant) -> DispatchTime {
        let wait = max(.zero, instant - .now).components
        return .now() + .nanoseconds(Int(wait.seconds) * 1_000_000_000 + Int(wait.attoseconds / 1_000_000_000))
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
        let cutoffs = AuditRetention.Cutoffs(
            nowMS: clock.nowMS(), retentionMS: retentionMS, historyRetentionMS: historyRetentionMS)
        do {
            var steps = 0
            while true {
                let pruned = try sink.pruneStep(cutoffs) { [self] pruned in
                    let now = clock.nowMS()
                    return AuditRetention.event(
                        for: pruned, cutoffs: cutoffs, retentionMS: retentionMS,
                        historyRetentionMS: historyRetentionMS, seq: takeSeq(atMS: now), nowMS: now)
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

    /// Commits `individual` events (in seq order) as batches, aggregated `summaries` as rows, and
    /// the keys' last-used times, retrying while the disk refuses them: events are never dropped,
    /// except at close once its timeout has passed (they are then counted). `taken`: the events
    /// taken from the queue that this accounts for (individual or absorbed).
    private func write(
        _ individual: [AuditRecord], summaries: [AuditRecord], lastUsed: [String: KeyUse], taken: Int
    ) {
        var attempt = 0
        while true {
            do {
                try sink.write(individual, summaries: summaries, lastUsed: lastUsed)
                state.withLock { state in
                    state.written += taken
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
            }
        }
    }
}
