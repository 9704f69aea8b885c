import Synchronization

/// Work the port's connections start off their event loops that comes back to a loop when done
/// (a leak report being stored, then answered): at most ``limit`` at once, so that a flood of it
/// (a reporter needs no secret, and may leave before its answer) cannot queue work and memory
/// without bound; and the port shuts its loops down only once none is left, since work scheduled
/// on a loop that has shut down is dropped (and crashes the process in SwiftNIO's strict mode).
package final class OffLoopTasks: Sendable {
    private let running = Atomic<Int>(0)
    /// The most tasks running at once.
    package let limit: Int

    /// A report is at most 64 KiB: sixteen in flight hold at most a megabyte, and still take a
    /// scanner's burst (a refused report is answered 503 and sent again).
    package static let defaultLimit = 16

    package init(limit: Int = OffLoopTasks.defaultLimit) { self.limit = limit }

    /// Runs `body` in a task, counted until it has returned (and so has scheduled what it
    /// schedules on a loop); false, and nothing run, when ``limit`` tasks are running already.
    func run(_ body: @escaping @Sendable () async -> Void) -> Bool {
        guard running.add(1, ordering: .relaxed).newValue <= limit else {
            running.subtract(1, ordering: .relaxed)
            return false
        }
        Task {
            await body()
            running.subtract(1, ordering: .releasing)
        }
        return true
    }

    /// Waits until none is running, or `timeout` has passed; false when some still run.
    func finished(within timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while running.load(ordering: .acquiring) > 0 {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }
}
