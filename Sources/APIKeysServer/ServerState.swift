import NIOCore
import Synchronization

/// What the server tracks across connections: open connections and KeyAdmin calls in flight.
final class ServerState: Sendable {
    let connections: OpenConnections
    private let adminCalls = Atomic<Int>(0)
    private let draining = Atomic<Bool>(false)
    private let shutDown = Atomic<Bool>(false)

    init(maxConnections: Int) { connections = OpenConnections(limit: maxConnections) }

    /// True for the first caller only: the one that shuts the server down.
    func beginShutdown() -> Bool { !shutDown.exchange(true, ordering: .acquiringAndReleasing) }
    var isShuttingDown: Bool { shutDown.load(ordering: .acquiring) }

    /// Registers `channel` (``OpenConnections/admit(_:)``: at the limit another connection may
    /// give way); nil when none can or the server is shutting down.
    func admit(_ channel: any Channel) -> OpenConnections.Activity? {
        guard !draining.load(ordering: .relaxed) else { return nil }
        return connections.admit(channel)
    }

    var openConnections: Int { connections.count }

    func adminCallStarted() { adminCalls.add(1, ordering: .relaxed) }
    func adminCallFinished() { adminCalls.subtract(1, ordering: .relaxed) }
    var adminCallsInFlight: Int { adminCalls.load(ordering: .relaxed) }

    /// Stops admitting connections and returns the open ones.
    func startDraining() -> [any Channel] {
        draining.store(true, ordering: .relaxed)
        return connections.channels
    }
}
