import Dispatch

/// Where KeyAdmin calls run: their own dispatch queue, not Swift's cooperative pool, so that code
/// blocking the pool in the same process (a test, an embedding application) cannot stall them,
/// and their store work (SQLite's blocking calls, PostgreSQL's awaits) stays off the event loops.
final class AdminExecutor: TaskExecutor {
    private let queue = DispatchQueue(label: "apikeyd.admin", qos: .userInitiated, attributes: .concurrent)

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
