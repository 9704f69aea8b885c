import NIOCore
import Synchronization

/// The HTTP port's open connections, at most `limit`. Past the limit a new connection takes the
/// slot of the oldest idle one (nothing received since it opened or since its last answer), which
/// is closed: a flood of silent connections cannot keep a probe or a proxy out. When every
/// connection is in the middle of a request, the new one is closed instead.
final class OpenConnections: Sendable {
    /// Whether a connection has bytes it has not been answered for (set by ``ActivityMarker``,
    /// cleared by each answer).
    final class Activity: Sendable {
        let busy = Atomic<Bool>(false)
    }

    private struct Entry {
        let channel: any Channel
        let activity: Activity
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        /// Admission order, oldest first; ids of closed connections are dropped lazily.
        var order: [ObjectIdentifier] = []
        var head = 0
    }

    private let state = Mutex(State())
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Connections held now, and how many of them have bytes not yet answered.
    var counts: (all: Int, busy: Int) {
        state.withLock { state in
            (state.entries.count, state.entries.values.filter { $0.activity.busy.load(ordering: .relaxed) }.count)
        }
    }

    /// Counts `channel` until it closes, closing the oldest idle connection to make room when at
    /// the limit; nil (not counted) when none is idle.
    func admit(_ channel: any Channel) -> Activity? {
        let id = ObjectIdentifier(channel)
        let activity = Activity()
        let evicted: (any Channel)? = state.withLock { state in
            var evicted: (any Channel)?
            if state.entries.count >= limit {
                guard let victim = Self.oldestIdle(&state) else { return nil }
                evicted = state.entries.removeValue(forKey: victim)?.channel
            }
            state.entries[id] = Entry(channel: channel, activity: activity)
            state.order.append(id)
            return evicted ?? channel
        }
        guard let evicted else { return nil }
        if evicted !== channel { evicted.close(promise: nil) }
        channel.closeFuture.whenComplete { [self] _ in
            state.withLock { state in
                state.entries.removeValue(forKey: id)
                // Keep the order list from outgrowing the entries.
                if state.order.count - state.head > 2 * state.entries.count + 64 {
                    state.order = state.order[state.head...].filter { state.entries[$0] != nil }
                    state.head = 0
                }
            }
        }
        return activity
    }

    /// The oldest connection with nothing unanswered, skipping (and forgetting) closed ones.
    private static func oldestIdle(_ state: inout State) -> ObjectIdentifier? {
        var index = state.head
        while index < state.order.count {
            let id = state.order[index]
            guard let entry = state.entries[id] else {
                if index == state.head { state.head += 1 }
                index += 1
                continue
            }
            if !entry.activity.busy.load(ordering: .relaxed) { return id }
            index += 1
        }
        return nil
    }
}

/// First in an HTTP connection's pipeline: marks the connection busy when bytes arrive, so that
/// it is not taken for idle (``OpenConnections``) until they are answered.
final class ActivityMarker: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let activity: OpenConnections.Activity

    init(_ activity: OpenConnections.Activity) { self.activity = activity }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        activity.busy.store(true, ordering: .relaxed)
        context.fireChannelRead(data)
    }
}
