import NIOCore
import Synchronization

/// What the server tracks across connections: open connections and KeyAdmin calls in flight.
final class ServerState: Sendable {
    private let connections = Mutex<[ObjectIdentifier: any Channel]>([:])
    private let adminCalls = Atomic<Int>(0)
    private let draining = Atomic<Bool>(false)
    private let shutDown = Atomic<Bool>(false)

    /// True for the first caller only: the one that shuts the server down.
    func beginShutdown() -> Bool { !shutDown.exchange(true, ordering: .acquiringAndReleasing) }
    var isShuttingDown: Bool { shutDown.load(ordering: .acquiring) }

    /// Registers `channel`; false when `limit` connections are already open or the server is
    /// shutting down. The channel is forgotten when it closes.
    func admit(_ channel: any Channel, limit: Int) -> Bool {
        let id = ObjectIdentifier(channel)
        let admitted = connections.withLock { open -> Bool in
            guard !draining.load(ordering: .relaxed), open.count < limit else { return false }
            open[id] = channel
            return true
        }
        if admitted {
            channel.closeFuture.whenComplete { [self] _ in connections.withLock { _ = $0.removeValue(forKey: id) } }
        }
        return admitted
    }

    var openConnections: Int { connections.withLock { $0.count } }

    func adminCallStarted() { adminCalls.add(1, ordering: .relaxed) }
    func adminCallFinished() { adminCalls.subtract(1, ordering: .relaxed) }
    var adminCallsInFlight: Int { adminCalls.load(ordering: .relaxed) }

    /// Stops admitting connections and returns the open ones.
    func startDraining() -> [any Channel] {
        draining.store(true, ordering: .relaxed)
        return connections.withLock { Array($0.values) }
    }
}
