@testable import APIKeysSQLite
import APIKeysStore
import Synchronization
import Testing

@testable import APIKeysPostgres

/// `withTimeout`, which bounds every PostgreSQL call: it answers at the limit even when the call
/// never ends, and a call that ends leaves nothing behind (no timer or sleeping task per call).
@Suite struct TimeoutTests {
    private let timedOut = StoreError.unreachable(server: "test", message: "no answer in time")

    @Test func aCallThatEndsIsAnsweredAndLeavesNothingWatched() async throws {
        let timeouts = CallTimeouts(sweepInterval: .milliseconds(20))
        try await withThrowingTaskGroup(of: Int.self) { group in
            for n in 0..<200 {
                group.addTask { try await withTimeout(.seconds(30), timeoutError: timedOut, timeouts: timeouts) { n } }
            }
            var sum = 0
            for try await n in group { sum += n }
            #expect(sum == (0..<200).reduce(0, +))
        }
        #expect(timeouts.watching == 0)
    }

    @Test func aCallThatNeverEndsIsAnsweredAtTheLimitAndCancelled() async throws {
        let timeouts = CallTimeouts(sweepInterval: .milliseconds(20))
        let cancelled = Atomic<Bool>(false)
        let parked = Mutex<CheckedContinuation<Void, Never>?>(nil)
        let started = ContinuousClock.now
        await #expect(throws: StoreError.self) {
            try await withTimeout(.milliseconds(100), timeoutError: timedOut, timeouts: timeouts) {
                // Ignores cancellation, as postgres-nio waiting for a pool connection does: it
                // waits until the test lets it go.
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in parked.withLock { $0 = continuation } }
                } onCancel: {
                    cancelled.store(true, ordering: .relaxed)
                }
            }
        }
        let waited = ContinuousClock.now - started
        parked.withLock { $0?.resume() }
        // No upper bound but "it returned": the parallel suite can hold the cooperative pool for seconds.
        #expect(waited >= .milliseconds(100))
        let wasCancelled = cancelled.load(ordering: .relaxed)
        #expect(wasCancelled)
        #expect(timeouts.watching == 0)
    }

    @Test func aCancelledCallerCancelsTheCall() async throws {
        let timeouts = CallTimeouts(sweepInterval: .milliseconds(20))
        let cancelled = Atomic<Bool>(false)
        let caller = Task {
            try await withTimeout(.seconds(30), timeoutError: timedOut, timeouts: timeouts) {
                try await withTaskCancellationHandler {
                    try await Task.sleep(for: .seconds(3600))
                } onCancel: {
                    cancelled.store(true, ordering: .relaxed)
                }
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        caller.cancel()
        await #expect(throws: (any Error).self) { try await caller.value }
        let wasCancelled = cancelled.load(ordering: .relaxed)
        #expect(wasCancelled)
        #expect(timeouts.watching == 0)
    }
}
