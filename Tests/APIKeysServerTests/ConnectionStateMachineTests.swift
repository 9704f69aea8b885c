@testable import APIKeysServer
import APIKeysStore
import NIOCore
import Testing

/// The RPC connection's state machine on its own: events in, actions out, with a clock of the
/// test's own (no channel, no socket, no waiting).
@Suite struct ConnectionStateMachineTests {
    private let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    private func machine(idle: TimeAmount? = .seconds(60), maxCalls: Int = 2) -> ConnectionStateMachine {
        ConnectionStateMachine(
            idleTimeout: idle, frameTimeout: .seconds(5), maxCallsInFlight: maxCalls, openedAt: start)
    }

    private func at(_ seconds: Int64) -> NIODeadline { start + .seconds(seconds) }

    // MARK: Frame deadline

    @Test func aFrameLeftIncompleteClosesTheConnectionAtTheFrameTimeout() {
        var state = machine()
        state.readBurstEnded(completedFrames: 0, bufferedBytes: 3, now: at(1))
        #expect(state.nextDeadline == at(6))
        var expiry = state.deadlineReached(now: at(5))
        #expect(expiry == nil)
        #expect(!state.isClosing)
        expiry = state.deadlineReached(now: at(6))
        #expect(expiry == .frameNotCompleted)
        #expect(state.isClosing)
        #expect(state.nextDeadline == nil)
    }

    @Test func bytesOfTheSameFrameTricklingInDoNotRestartItsDeadline() {
        var state = machine()
        state.readBurstEnded(completedFrames: 0, bufferedBytes: 1, now: at(1))
        for second in 2...5 { state.readBurstEnded(completedFrames: 0, bufferedBytes: second, now: at(Int64(second))) }
        let expiry = state.deadlineReached(now: at(6))
        #expect(expiry == .frameNotCompleted)
    }

    @Test func aCompletedFrameLeavingTheNextOnesStartRestartsTheDeadline() {
        var state = machine()
        state.readBurstEnded(completedFrames: 0, bufferedBytes: 3, now: at(1))
        state.readBurstEnded(completedFrames: 1, bufferedBytes: 2, now: at(4))
        var expiry = state.deadlineReached(now: at(6))
        #expect(expiry == nil)
        #expect(state.nextDeadline == at(9))
        state.readBurstEnded(completedFrames: 1, bufferedBytes: 0, now: at(8))
        expiry = state.deadlineReached(now: at(9))
        #expect(expiry == nil)
        #expect(state.nextDeadline == at(68), "only the idle clock runs once no frame is waiting")
    }

    // MARK: Idle

    @Test func noCompleteFrameForTheIdleTimeoutClosesTheConnection() {
        var state = machine()
        #expect(state.nextDeadline == at(60))
        var expiry = state.deadlineReached(now: at(59))
        #expect(expiry == nil)
        expiry = state.deadlineReached(now: at(60))
        #expect(expiry == .idle)
        #expect(state.isClosing)
    }

    @Test func eachCompletedFrameRestartsTheIdleClock() {
        var state = machine()
        state.readBurstEnded(completedFrames: 4, bufferedBytes: 0, now: at(50))
        var expiry = state.deadlineReached(now: at(60))
        #expect(expiry == nil)
        #expect(state.nextDeadline == at(110))
        expiry = state.deadlineReached(now: at(110))
        #expect(expiry == .idle)
    }

    @Test func withoutAnIdleTimeoutOnlyAnIncompleteFrameHasADeadline() {
        var state = machine(idle: nil)
        #expect(state.nextDeadline == nil)
        let expiry = state.deadlineReached(now: at(100_000))
        #expect(expiry == nil)
        state.readBurstEnded(completedFrames: 0, bufferedBytes: 1, now: at(100_000))
        #expect(state.nextDeadline == at(100_005))
    }

    // MARK: Write backpressure

    @Test func aClientThatDoesNotReadItsRepliesIsNotReadFromUntilItDoes() {
        var state = machine()
        var action = state.writabilityChanged(isWritable: false, now: at(1))
        #expect(action == .stopReading)
        #expect(!state.isReading)
        action = state.writabilityChanged(isWritable: false, now: at(2))
        #expect(action == .none)
        action = state.writabilityChanged(isWritable: true, now: at(3))
        #expect(action == .startReading)
        #expect(state.isReading)
    }

    @Test func theFrameClockStopsWhileNotReadingAndStartsAfreshAfter() {
        var state = machine()
        state.readBurstEnded(completedFrames: 0, bufferedBytes: 3, now: at(1))
        _ = state.writabilityChanged(isWritable: false, now: at(2))
        var expiry = state.deadlineReached(now: at(30))
        #expect(expiry == nil, "the server chose not to read: not the client's time")
        _ = state.writabilityChanged(isWritable: true, now: at(30))
        #expect(state.nextDeadline == at(35))
        expiry = state.deadlineReached(now: at(35))
        #expect(expiry == .frameNotCompleted)
    }

    @Test func aClientThatReadsNothingForTheIdleTimeoutIsIdle() {
        var state = machine()
        _ = state.writabilityChanged(isWritable: false, now: at(1))
        let expiry = state.deadlineReached(now: at(60))
        #expect(expiry == .idle)
    }

    // MARK: Audit backpressure

    @Test func anAuditBacklogStopsReadingUntilTheWriterCatchesUp() {
        var state = machine()
        var action = state.auditPressure(.nearlyFull, checksInBurst: 1, now: at(1))
        #expect(action == .stopReading)
        action = state.auditPressure(.nearlyFull, checksInBurst: 1, now: at(2))
        #expect(action == .none)
        action = state.auditCaughtUp(now: at(3))
        #expect(action == .startReading)
        #expect(state.isReading)
    }

    /// While the writer is behind (more than half its queue), only a heavy sender stops reading;
    /// once it is nearly full, everyone does.
    @Test func heavySendersStopFirstAndEveryoneWhenTheQueueIsNearlyFull() {
        var light = machine()
        #expect(light.auditPressure(.behind, checksInBurst: 1, now: at(1)) == .none)
        #expect(light.auditPressure(.behind, checksInBurst: ConnectionStateMachine.heavyBurst - 1, now: at(1)) == .none)
        #expect(light.isReading)
        #expect(light.auditPressure(.nearlyFull, checksInBurst: 1, now: at(2)) == .stopReading)
        var heavy = machine()
        #expect(
            heavy.auditPressure(.behind, checksInBurst: ConnectionStateMachine.heavyBurst, now: at(1)) == .stopReading)
        #expect(heavy.auditPressure(.none, checksInBurst: 100, now: at(2)) == .none)
        #expect(!heavy.isReading)
        #expect(heavy.auditCaughtUp(now: at(3)) == .startReading)
        var idle = machine()
        #expect(idle.auditPressure(.none, checksInBurst: 1000, now: at(1)) == .none)
    }

    @Test func noClockRunsWhileTheAuditWriterHoldsReadingBack() {
        var state = machine()
        state.readBurstEnded(completedFrames: 0, bufferedBytes: 3, now: at(1))
        _ = state.auditPressure(.nearlyFull, checksInBurst: 1, now: at(2))
        #expect(state.nextDeadline == nil)
        let expiry = state.deadlineReached(now: at(500))
        #expect(expiry == nil)
        _ = state.auditCaughtUp(now: at(500))
        #expect(state.nextDeadline == at(505))
        state.readBurstEnded(completedFrames: 1, bufferedBytes: 0, now: at(501))
        #expect(state.nextDeadline == at(561))
    }

    @Test func bothPausesMustLiftBeforeReadingResumes() {
        var state = machine()
        var action = state.auditPressure(.nearlyFull, checksInBurst: 1, now: at(1))
        #expect(action == .stopReading)
        action = state.writabilityChanged(isWritable: false, now: at(2))
        #expect(action == .none)
        action = state.auditCaughtUp(now: at(3))
        #expect(action == .none)
        #expect(!state.isReading)
        #expect(state.nextDeadline == at(63), "the idle clock runs again once the audit writer caught up")
        action = state.writabilityChanged(isWritable: true, now: at(4))
        #expect(action == .startReading)
    }

    // MARK: Close and calls

    @Test func aProtocolErrorClosesOnceAndEndsEveryClock() {
        var state = machine()
        state.readBurstEnded(completedFrames: 0, bufferedBytes: 3, now: at(1))
        var closes = state.protocolError()
        #expect(closes)
        closes = state.protocolError()
        #expect(!closes, "a second error does not close twice")
        #expect(!state.isReading)
        #expect(state.nextDeadline == nil)
        let expiry = state.deadlineReached(now: at(1000))
        #expect(expiry == nil)
        var action = state.writabilityChanged(isWritable: false, now: at(2))
        #expect(action == .none)
        action = state.auditCaughtUp(now: at(3))
        #expect(action == .none, "a closing connection never starts reading again")
    }

    @Test func callsBesidesCheckAreLimitedPerConnectionAndFreedWhenAnswered() {
        var state = machine(maxCalls: 2)
        var started = state.callStarting()
        #expect(started)
        started = state.callStarting()
        #expect(started)
        started = state.callStarting()
        #expect(!started, "the third call is refused, not queued")
        #expect(state.callsInFlight == 2)
        state.callFinished()
        started = state.callStarting()
        #expect(started)
    }
}

/// The HTTP port keeps time with the same ``ConnectionDeadlines``: idle from the connection's
/// start or its last answer, with no frame deadline.
@Suite struct HTTPConnectionDeadlineTests {
    @Test func anHTTPConnectionIsIdleFromItsLastAnswerWhateverTrickles() {
        let start = NIODeadline.uptimeNanoseconds(0)
        var deadlines = ConnectionDeadlines(idleTimeout: .seconds(75), frameTimeout: nil, openedAt: start)
        deadlines.unitCompleted(now: start + .seconds(10))
        deadlines.readEnded(completedUnits: 0, bufferedBytes: 100, now: start + .seconds(80))
        #expect(deadlines.nextDeadline == start + .seconds(85))
        #expect(deadlines.expiry(at: start + .seconds(84)) == nil)
        #expect(deadlines.expiry(at: start + .seconds(85)) == .idle)
    }
}
