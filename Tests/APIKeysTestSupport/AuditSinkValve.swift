import APIKeysCore
import APIKeysStore
import Dispatch
import Foundation
import Synchronization

/// A fault for the audit trail's disk: while the valve is held, the store's audit writes wait, as
/// on a disk that has stalled, and the writer commits nothing. Install ``decorator`` where the
/// store is opened; ``release()`` lets the waiting write through.
///
/// The writer takes a batch before it writes, so the first events queued after ``hold()`` form
/// a batch of their own (the one waiting); what is queued while it waits is the next batch.
package final class AuditSinkValve: Sendable {
    private struct State {
        var held = false
        var waiting: [DispatchSemaphore] = []
    }

    private let state = Mutex(State())

    package init() {}

    /// The decorator to give the store: its sink's writes pass through this valve.
    package var decorator: AuditSinkDecorator { { [self] sink in DelayedSink(sink: sink) { _ in self.pass() } } }

    /// Audit writes wait from now on until ``release()``.
    package func hold() { state.withLock { $0.held = true } }

    /// Lets the waiting write and those after it through.
    package func release() {
        let waiting = state.withLock { state in
            state.held = false
            defer { state.waiting = [] }
            return state.waiting
        }
        for semaphore in waiting { semaphore.signal() }
    }

    /// Waits (5 s at most) until a write waits at the valve: the writer has taken its batch, and
    /// what is queued from now on stays in its queue. False when none came.
    package func waitForAHeldWrite() -> Bool {
        let deadline = ContinuousClock.now + .seconds(5)
        while state.withLock({ $0.waiting.isEmpty }) {
            guard ContinuousClock.now < deadline else { return false }
            usleep(1000)
        }
        return true
    }

    /// Waits while the valve is held; a minute at most, so that a test that forgets to release
    /// fails instead of hanging the run.
    private func pass() {
        let semaphore = DispatchSemaphore(value: 0)
        let held = state.withLock { state in
            if state.held { state.waiting.append(semaphore) }
            return state.held
        }
        if held { _ = semaphore.wait(timeout: .now() + .seconds(60)) }
    }
}

/// A slow disk for the audit trail: each write takes `perEvent` per event it stores (before the
/// real write), so the writer keeps up with at most 1/`perEvent` events a second.
package struct AuditSinkThrottle: Sendable {
    package let perEvent: Duration

    package init(perEvent: Duration) { self.perEvent = perEvent }

    package var decorator: AuditSinkDecorator {
        { [perEvent] sink in
            DelayedSink(sink: sink) { events in
                let wait = perEvent * events
                Thread.sleep(
                    forTimeInterval: Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18)
            }
        }
    }
}

/// The store's sink with a wait before each write: `beforeWrite` is given the number of events.
private struct DelayedSink: AuditSink {
    let sink: any AuditSink
    let beforeWrite: @Sendable (Int) -> Void

    func write(_ individual: [AuditRecord], summaries: [AuditRecord], lastUsed: [String: KeyUse]) throws {
        beforeWrite(individual.count + summaries.count)
        try sink.write(individual, summaries: summaries, lastUsed: lastUsed)
    }

    func pruneStep(
        _ cutoffs: AuditRetention.Cutoffs,
        recording record: @escaping @Sendable (AuditRetention.Pruned) -> AuditRecord
    ) throws -> AuditRetention.Pruned {
        try sink.pruneStep(cutoffs, recording: record)
    }

    func reclaimSpace() throws { try sink.reclaimSpace() }
    func freeBytes() -> Int64? { sink.freeBytes() }
    func close() { sink.close() }
}
