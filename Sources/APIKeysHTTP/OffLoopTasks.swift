import Synchronization

/// Work the port's connections start off their event loops that comes back to a loop when done
/// (a leak report being stored, then answered): the port shuts its loops down only once none is
/// left, since work scheduled on a loop that has shut down is dropped (and crashes the process in
/// SwiftNIO's strict mode).
package final class OffLoopTasks: Sendable {
    private let running = Atomic<Int>(0)

    package init() {}

    /// Runs `body` in a task, counted until it has returned (and so has scheduled what it
    /// schedules on a loop).
    func run(_ body: @escaping @Sendable () async -> Void) {
        running.add(1, ordering: .relaxed)
        Task {
            await body()
            running.subtract(1, ordering: .releasing)
        }
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
