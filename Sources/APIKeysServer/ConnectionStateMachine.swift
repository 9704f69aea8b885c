import APIKeysStore
import NIOCore

/// An RPC connection's state apart from its socket: whether it reads and why not, when it must
/// be closed, and how many calls besides Check it has running. ``ConnectionHandler`` feeds it
/// events and carries out the actions it answers with; tests drive it with their own clock.
///
/// Reading stops for two reasons, each lifted on its own: the audit writer is far behind (TCP
/// then slows the client instead of checks being refused), or the client does not read its
/// replies (so the replies queued for one connection stay bounded). Once closing, it reads,
/// times and answers nothing more.
struct ConnectionStateMachine {
    /// What the handler must do with the channel's reading.
    enum ReadAction: Equatable {
        case none
        case stopReading
        case startReading
    }

    private(set) var deadlines: ConnectionDeadlines
    private(set) var pausedForAudit = false
    private(set) var pausedForWrites = false
    private(set) var isClosing = false
    /// Calls besides Check started and not yet answered.
    private(set) var callsInFlight = 0
    let maxCallsInFlight: Int

    init(idleTimeout: TimeAmount?, frameTimeout: TimeAmount, maxCallsInFlight: Int, openedAt now: NIODeadline) {
        self.deadlines = ConnectionDeadlines(idleTimeout: idleTimeout, frameTimeout: frameTimeout, openedAt: now)
        self.maxCallsInFlight = maxCallsInFlight
    }

    var isReading: Bool { !isClosing && !pausedForAudit && !pausedForWrites }

    /// When the handler's ``DeadlineTimer`` must fire next; nil while no clock runs or once closing.
    var nextDeadline: NIODeadline? { isClosing ? nil : deadlines.nextDeadline }

    /// A read burst ended: `completedFrames` frames were cut and `bufferedBytes` of the next are held.
    mutating func readBurstEnded(completedFrames: Int, bufferedBytes: Int, now: NIODeadline) {
        guard completedFrames > 0 || bufferedBytes > 0 else { return }
        deadlines.readEnded(completedUnits: completedFrames, bufferedBytes: bufferedBytes, now: now)
    }

    /// Checks in one read burst from which a connection counts as a heavy sender: while the audit
    /// writer is behind, heavy senders stop reading first, and a client making a few checks at a
    /// time goes on until the queue is nearly full.
    static let heavyBurst = 4

    /// After a read burst of `checks` checks, with the audit writer under `pressure`: whether to
    /// stop reading until ``auditCaughtUp(now:)`` (the handler then waits for the backlog to go).
    mutating func auditPressure(_ pressure: AuditPressure, checksInBurst checks: Int, now: NIODeadline)
        -> ReadAction
    {
        guard !pausedForAudit else { return .none }
        switch pressure {
        case .none: return .none
        case .behind where checks < Self.heavyBurst: return .none
        case .behind, .nearlyFull: return setPaused(forAudit: true, forWrites: pausedForWrites, now: now)
        }
    }

    mutating func auditCaughtUp(now: NIODeadline) -> ReadAction {
        setPaused(forAudit: false, forWrites: pausedForWrites, now: now)
    }

    /// The channel became writable or stopped being so (the client reads its replies, or not).
    mutating func writabilityChanged(isWritable: Bool, now: NIODeadline) -> ReadAction {
        setPaused(forAudit: pausedForAudit, forWrites: !isWritable, now: now)
    }

    /// The timer fired: why the connection must now be closed, if it must (it is then closing).
    mutating func deadlineReached(now: NIODeadline) -> ConnectionDeadlines.Expiry? {
        guard !isClosing, let expiry = deadlines.expiry(at: now) else { return nil }
        isClosing = true
        return expiry
    }

    /// A frame could not be read (too large, malformed, the peer broke the contract): true the
    /// first time, when the handler sends what is pending and closes.
    mutating func protocolError() -> Bool {
        guard !isClosing else { return false }
        isClosing = true
        return true
    }

    /// A call besides Check is about to start: false when this connection already has
    /// ``maxCallsInFlight`` running (the call is refused, not queued).
    mutating func callStarting() -> Bool {
        guard callsInFlight < maxCallsInFlight else { return false }
        callsInFlight += 1
        return true
    }

    mutating func callFinished() {
        precondition(callsInFlight > 0, "a call finished that had not started")
        callsInFlight -= 1
    }

    private mutating func setPaused(forAudit: Bool, forWrites: Bool, now: NIODeadline) -> ReadAction {
        let wasReading = isReading
        pausedForAudit = forAudit
        pausedForWrites = forWrites
        deadlines.readingPaused(forAudit: forAudit, forOtherReasons: forWrites, now: now)
        switch (wasReading, isReading) {
        case (true, false): return .stopReading
        case (false, true): return .startReading
        default: return .none
        }
    }
}
