import NIOCore

/// When a connection must be closed for keeping a slot without using it: one value type that
/// both ports keep time with, driven by the caller's clock so tests can run it without a socket.
///
/// - **Idle**: no complete unit (an RPC frame; an answered HTTP request) for `idleTimeout`, since
///   the connection opened or since its last unit. Bytes that never make a unit (a trickle) do
///   not keep a connection open.
/// - **Frame**: the start of a unit has waited for its rest for `frameTimeout` (a slowloris, a
///   lying length prefix). The same unit's bytes trickling in do not restart it; a unit that
///   completes and leaves the start of the next one behind does.
///
/// Time the server spends not reading is not counted against the client: the frame clock stops
/// while reading is paused for any reason and the idle clock while it is paused for the audit
/// writer; each starts afresh when reading resumes. (A client that does not read its replies
/// for the idle timeout is idle.)
package struct ConnectionDeadlines: Sendable {
    /// Why a connection's time ran out.
    package enum Expiry: Equatable, Sendable {
        case idle
        case frameNotCompleted
    }

    /// nil: a connection is never closed for being idle.
    package let idleTimeout: TimeAmount?
    /// nil: an incomplete unit may wait for its rest as long as the idle timeout allows.
    package let frameTimeout: TimeAmount?
    /// When the idle clock started: the connection opened, its last unit completed, or reading
    /// resumed after the audit writer caught up.
    private var idleSince: NIODeadline
    /// When the start of an incomplete unit began waiting for its rest; nil: none is waiting.
    private var partialSince: NIODeadline?
    private var pausedForAudit = false
    private var pausedForOtherReasons = false

    package init(idleTimeout: TimeAmount?, frameTimeout: TimeAmount?, openedAt now: NIODeadline) {
        self.idleTimeout = idleTimeout
        self.frameTimeout = frameTimeout
        self.idleSince = now
    }

    /// A read burst ended having completed `completedUnits` units and holding `bufferedBytes`
    /// of an incomplete one.
    package mutating func readEnded(completedUnits: Int, bufferedBytes: Int, now: NIODeadline) {
        if completedUnits > 0 { idleSince = now }
        if bufferedBytes == 0 {
            partialSince = nil
        } else if completedUnits > 0 || partialSince == nil {
            partialSince = now
        }
    }

    /// One unit completed outside a read burst (the HTTP port: a request was answered).
    package mutating func unitCompleted(now: NIODeadline) {
        readEnded(completedUnits: 1, bufferedBytes: 0, now: now)
    }

    /// Reading stopped or resumed: `forAudit` while the audit writer is behind, `forOtherReasons`
    /// while the client does not read its replies (or anything else that is the server's choice).
    package mutating func readingPaused(forAudit: Bool, forOtherReasons: Bool, now: NIODeadline) {
        let wasPaused = pausedForAudit || pausedForOtherReasons
        if pausedForAudit && !forAudit { idleSince = now }
        if wasPaused && !(forAudit || forOtherReasons), partialSince != nil { partialSince = now }
        pausedForAudit = forAudit
        pausedForOtherReasons = forOtherReasons
    }

    /// The earliest moment a running clock runs out; nil while none runs.
    package var nextDeadline: NIODeadline? {
        switch (idleDeadline, frameDeadline) {
        case (let idle?, let frame?): return min(idle, frame)
        case (let idle, let frame): return idle ?? frame
        }
    }

    /// Why the connection must be closed at `now`; nil: it may stay open.
    package func expiry(at now: NIODeadline) -> Expiry? {
        if let frameDeadline, now >= frameDeadline { return .frameNotCompleted }
        if let idleDeadline, now >= idleDeadline { return .idle }
        return nil
    }

    private var idleDeadline: NIODeadline? {
        guard let idleTimeout, !pausedForAudit else { return nil }
        return idleSince + idleTimeout
    }

    private var frameDeadline: NIODeadline? {
        guard let frameTimeout, let partialSince, !pausedForAudit, !pausedForOtherReasons else { return nil }
        return partialSince + frameTimeout
    }
}

/// The one scheduled task a connection keeps for its ``ConnectionDeadlines``: armed for the
/// earliest deadline, left alone when that moves later (it fires, finds time left, and is armed
/// again), so the hot path does not reschedule a timer for every frame. Confined to the
/// connection's event loop.
package struct DeadlineTimer {
    private var scheduled: Scheduled<Void>?
    private var firesAt: NIODeadline?

    package init() {}

    /// Makes sure `fire` runs on `eventLoop` no later than `deadline` (nil: no deadline to keep;
    /// a task already armed stays).
    package mutating func arm(
        for deadline: NIODeadline?, on eventLoop: any EventLoop, fire: @escaping @Sendable () -> Void
    ) {
        guard let deadline, needsArming(for: deadline) else { return }
        scheduled?.cancel()
        firesAt = deadline
        scheduled = eventLoop.scheduleTask(deadline: deadline, fire)
    }

    /// False when the task armed already fires by `deadline`: a caller on a hot path asks this
    /// before it builds the closure for ``arm(for:on:fire:)``.
    package func needsArming(for deadline: NIODeadline?) -> Bool {
        guard let deadline else { return false }
        guard let firesAt else { return true }
        return deadline < firesAt
    }

    /// Called first by `fire`: the task is spent.
    package mutating func fired() {
        scheduled = nil
        firesAt = nil
    }

    package mutating func cancel() {
        scheduled?.cancel()
        fired()
    }
}
