import Dispatch
import Synchronization

/// Where the server's KeyAdmin calls start: a dispatch queue as a `TaskExecutor`, not Swift's
/// cooperative pool, so that code blocking that pool in the same process (a test, an embedding
/// application) cannot hold a call from starting, and calls stay off the event loops.
package final class StoreExecutor: TaskExecutor {
    /// The one executor of the process.
    package static let shared = StoreExecutor()

    private let queue = DispatchQueue(label: "apikeys.store", qos: .userInitiated, attributes: .concurrent)

    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// Runs async `body` in a task from a thread that may block, and waits for its
/// result: for the audit writer's own thread, tools and tests; never call it on a task's executor.
package func runBlocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let outcome = Mutex<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let result: Result<T, any Error>
        do { result = .success(try await body()) } catch { result = .failure(error) }
        outcome.withLock { $0 = result }
        done.signal()
    }
    done.wait()
    return try outcome.withLock { $0! }.get()
}
