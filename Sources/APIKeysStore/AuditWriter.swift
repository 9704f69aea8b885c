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
        var closing = false
        /// Set by ``flush()``: write aggregated groups now, not when their second is over.
        var drainAggregates = false
        /// Tests only: take nothing from the queue, as a writer stuck on a slow disk would.
        var paused = false
        /// Tests only: a disk-full simulation for the writer's connection to apply.
        var forbidGrowth: Bool?
    }

    let capacity: Int
    private let batchSize: Int
    private let flushInterval: DispatchTimeInterval
    private let state: Mutex<State>
    private let wake = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let connection: SQLiteConnection
    private let mode: AuditMode
    private let clock: any WallClock
    private let logger: Logger

    /// `lastSeq`: the highest seq already recorded; `lastAtMS`: the time of the last api.request
    /// stored (times stay non-decreasing across restarts, even if the clock went back meanwhile).
    init(
        connection: SQLiteConnection, lastSeq: UInt64, lastAtMS: Int64, mode: AuditMode = .full, clock: any WallClock,
        capacity: Int = 100_000, batchSize: Int = 1_000, flushInterval: DispatchTimeInterval = .milliseconds(5),
        logger: Logger
    ) {
        self.connection = connection
        self.state = Mutex(State(nextSeq: lastSeq + 1, lastAtMS: lastAtMS))
        // The writer appends to the audit tables and updates last-used times all day: a 32 MB page
        // cache keeps their hot pages in memory instead of re-reading them with a syscall per miss
        // (measured with one row per check; kept for the batch tables and the keys table).
        try? connection.execute("PRAGMA cache_size = -32000")
        self.mode = mode
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
            state.enqueued += 1
            return (true, state.queue.count == batchSize)
        }
        if full { wake.signal() }
        return accepted
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

    /// True once ``close()`` has begun: no event is taken any more.
    var isClosing: Bool { state.withLock { $0.closing } }

    /// True when more than half the queue is taken: time for callers to stop taking new work.
    var isUnderPressure: Bool { state.withLock { $0.queue.count > capacity / 2 } }

    /// Waits until every event queued before the call is committed (aggregated groups included).
    func flush() {
        let target = state.withLock { state in
            state.drainAggregates = true
            return state.enqueued
        }
        wake.signal()
        while state.withLock({ $0.written < target && !$0.closing }) {
            usleep(500)
        }
    }

    /// Writes what is queued, stops the thread and closes its connection. Idempotent.
    func close() {
        let first = state.withLock { state in
            defer { state.closing = true }
            return !state.closing
        }
        guard first else { return }
        wake.signal()
        finished.wait()
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
        while true {
            _ = wake.wait(timeout: .now() + flushInterval)
            if let forbid = state.withLock({ state in defer { state.forbidGrowth = nil }; return state.forbidGrowth }) {
                try? connection.forbidGrowth(forbid)
            }
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
            if closing && state.withLock({ $0.queue.isEmpty }) && aggregator.isEmpty { break }
        }
        connection.close()
        finished.signal()
    }

    /// Commits `individual` events (in seq order) as batches, aggregated `summaries` as rows, and
    /// the last-used times of the checks in `batch`, retrying while the disk refuses them: events
    /// are never dropped.
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
                state.withLock { $0.written += batch.count }
                return
            } catch {
                attempt += 1
                logger.error(
                    "audit batch not written, retrying",
                    metadata: [
                        "events": "\(individual.count + summaries.count)", "attempt": "\(attempt)", "error": "\(error)",
                    ])
                usleep(100_000)
            }
        }
    }
}
