import Dispatch

/// Who waits for an ``AuditWriter``, and for what: one list for flushes, closes and prunes,
/// looked at after every pass of the writer. Kept under the writer's lock.
struct AuditWaiters {
    /// Someone waiting: a task (never blocked) or a thread outside the executor.
    enum Waiter: Sendable {
        case task(CheckedContinuation<Void, Never>)
        case thread(DispatchSemaphore)

        func resume() {
            switch self {
            case .task(let continuation): continuation.resume()
            case .thread(let semaphore): semaphore.signal()
            }
        }
    }

    /// The moment a waiter waits for.
    enum Moment: Equatable {
        /// `count` events committed and, unless `drainPass` is 0, that many passes that drained
        /// the aggregated groups done (`count` `Int.max`: the writer's end).
        case written(count: Int, drainPass: Int)
        /// `count` prunes done.
        case pruned(count: Int)
    }

    private var waiting: [(moment: Moment, waiter: Waiter)] = []

    mutating func add(_ waiter: Waiter, for moment: Moment) {
        waiting.append((moment, waiter))
    }

    /// Removes and returns the waiters whose moment has come; every one once the writer has
    /// `finished`.
    mutating func takeReady(written: Int, drainPassesDone: Int, prunesDone: Int, finished: Bool) -> [Waiter] {
        func hasCome(_ moment: Moment) -> Bool {
            if finished { return true }
            switch moment {
            case .written(let count, let drainPass): return count <= written && drainPass <= drainPassesDone
            case .pruned(let count): return count <= prunesDone
            }
        }
        var ready: [Waiter] = []
        waiting.removeAll { entry in
            guard hasCome(entry.moment) else { return false }
            ready.append(entry.waiter)
            return true
        }
        return ready
    }
}
