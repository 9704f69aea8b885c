import APIKeysCore
import Synchronization

/// Work the port's connections start off their event loops that comes back to a loop when done
/// (a leak report being stored, then answered): at most ``limit`` at once, so that a flood of it
/// (a reporter needs no secret, and may leave before its answer) cannot queue work and memory
/// without bound, and at most ``limitPerSource`` from one client address, so that one flooding
/// address cannot take every slot from the others (a secret scanner's report among them); and
/// the port shuts its loops down only once none is left, since work scheduled on a loop that has
/// shut down is dropped (and crashes the process in SwiftNIO's strict mode).
package final class OffLoopTasks: Sendable {
    private struct Running {
        var total = 0
        /// Only sources with a task running: at most ``limit`` entries.
        var bySource: [String: Int] = [:]
    }

    private let running = Mutex(Running())
    /// The most tasks running at once.
    package let limit: Int
    /// The most tasks of one source running at once.
    package let limitPerSource: Int

    /// A report is at most 64 KiB: sixteen in flight hold at most a megabyte, and still take a
    /// scanner's burst (a refused report is answered 503 and sent again).
    package static let defaultLimit = 16
    /// A quarter of the slots: one address flooding leaves three quarters to the others.
    package static let defaultLimitPerSource = 4

    package init(limit: Int = OffLoopTasks.defaultLimit, limitPerSource: Int = OffLoopTasks.defaultLimitPerSource) {
        self.limit = limit
        self.limitPerSource = limitPerSource
    }

    /// Runs `body` in a task for `source` (the client address), counted until it has returned (and
    /// so has scheduled what it schedules on a loop); false, and nothing run, when ``limit``
    /// tasks, or ``limitPerSource`` of `source`'s, are running already.
    func run(from source: String, _ body: @escaping @Sendable () async -> Void) -> Bool {
        let admitted = running.withLock { running in
            guard running.total < limit, running.bySource[source, default: 0] < limitPerSource else { return false }
            running.total += 1
            running.bySource[source, default: 0] += 1
            return true
        }
        guard admitted else { return false }
        Task {
            await body()
            running.withLock { running in
                running.total -= 1
                let left = running.bySource[source, default: 1] - 1
                running.bySource[source] = left > 0 ? left : nil
            }
        }
        return true
    }

    /// What a client address counts against in ``limitPerSource``: the address, or for IPv6 its
    /// /64 (one host commonly holds a whole /64, and could otherwise take a slot per address).
    package static func source(of clientAddress: String) -> String {
        guard let bits = IPNetwork.address(clientAddress), !(bits.high == 0 && bits.low >> 32 == 0xffff) else {
            return clientAddress  // IPv4 (held IPv4-mapped), or not an address
        }
        return "\(String(bits.high, radix: 16))::/64"
    }

    /// Waits until none is running, or `timeout` has passed; false when some still run.
    func finished(within timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while running.withLock({ $0.total }) > 0 {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }
}
