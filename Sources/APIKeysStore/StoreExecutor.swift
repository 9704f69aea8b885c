import Dispatch

/// Where the key service's own tasks run: KeyAdmin calls, and the PostgreSQL store's pool, change
/// feed and audit batches. A dispatch queue as a `TaskExecutor` (tasks prefer it), not Swift's
/// cooperative pool: code that blocks that pool in the same process (a test, an embedding
/// application) cannot stall them, and they stay off the event loops.
package final class StoreExecutor: TaskExecutor {
    /// The one executor of the process.
    package static let shared = StoreExecutor()

    private let queue = DispatchQueue(label: "apikeys.store", qos: .userInitiated, attributes: .concurrent)

    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
