import APIKeysStore
import Synchronization

/// Runs `body`, failing with `timeoutError` when it has not finished within `limit` (to within
/// the sweep interval of `timeouts`). Returns at the limit even when `body` ignores cancellation
/// (postgres-nio waiting for a connection to a database that is down): `body` is cancelled and
/// left to end on its own.
///
/// One task per call and no timer: the limit is watched by `timeouts`.
func withTimeout<T: Sendable>(
    _ limit: Duration, timeoutError: StoreError, timeouts: CallTimeouts = .shared,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let work = CancellableWork()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let answered = AnsweredOnce()
            let watch = timeouts.watch(until: .now + limit) {
                guard answered.claim() else { return }
                work.cancel()
                continuation.resume(throwing: timeoutError)
            }
            work.start {
                let result: Result<T, any Error>
                do { result = .success(try await body()) } catch { result = .failure(error) }
                timeouts.forget(watch)
                if answered.claim() { continuation.resume(with: result) }
            }
        }
    } onCancel: {
        work.cancel()
    }
}

/// The deadlines of the calls in flight, checked by one sweeping task every
/// `sweepInterval` while there are any (it ends when there are none), instead of a timer and a
/// sleeping task per call: a database call costs one dictionary insert and remove.
final class CallTimeouts: Sendable {
    static let shared = CallTimeouts()
    /// How late a timeout may fire.
    let sweepInterval: Duration

    init(sweepInterval: Duration = .milliseconds(100)) { self.sweepInterval = sweepInterval }

    private struct Watch {
        let deadline: ContinuousClock.Instant
        let expire: @Sendable () -> Void
    }

    private let state = Mutex<(next: UInt64, watches: [UInt64: Watch], sweeping: Bool)>((0, [:], false))

    /// Calls `expire` once `deadline` has passed, unless ``forget(_:)`` comes first; returns the
    /// watch's id.
    func watch(until deadline: ContinuousClock.Instant, expire: @escaping @Sendable () -> Void) -> UInt64 {
        let (id, startSweeper) = state.withLock { state -> (UInt64, Bool) in
            state.next += 1
            state.watches[state.next] = Watch(deadline: deadline, expire: expire)
            defer { state.sweeping = true }
            return (state.next, !state.sweeping)
        }
        if startSweeper { Task { await self.sweep() } }
        return id
    }

    /// Stops watching `id` (its call finished).
    func forget(_ id: UInt64) {
        _ = state.withLock { $0.watches.removeValue(forKey: id) }
    }

    /// The number of calls watched, for tests.
    var watching: Int { state.withLock { $0.watches.count } }

    private func sweep() async {
        while true {
            try? await Task.sleep(for: sweepInterval)
            let now = ContinuousClock.now
            let (expired, done) = state.withLock { state -> ([Watch], Bool) in
                let expired = state.watches.filter { $0.value.deadline <= now }
                for id in expired.keys { state.watches.removeValue(forKey: id) }
                if state.watches.isEmpty { state.sweeping = false }
                return (Array(expired.values), state.watches.isEmpty)
            }
            for watch in expired { watch.expire() }
            if done { return }
        }
    }
}

/// A task started after the handle that cancels it exists: a cancel that comes first cancels the
/// task as soon as it starts.
private final class CancellableWork: Sendable {
    private let state = Mutex<(task: Task<Void, Never>?, cancelled: Bool)>((nil, false))

    func start(_ body: @escaping @Sendable () async -> Void) {
        let task = Task { await body() }
        let cancelled = state.withLock { state -> Bool in
            state.task = task
            return state.cancelled
        }
        if cancelled { task.cancel() }
    }

    func cancel() {
        let task = state.withLock { state -> Task<Void, Never>? in
            state.cancelled = true
            return state.task
        }
        task?.cancel()
    }
}

/// Which of two racers answers: the first to claim.
private final class AnsweredOnce: Sendable {
    private let taken = Atomic<Bool>(false)

    /// True for the first caller only.
    func claim() -> Bool { !taken.exchange(true, ordering: .acquiringAndReleasing) }
}
