import NIOCore

/// A connection whose replies wait for the end of its event loop's turn (``ReplyFlusher``).
package protocol TurnEndFlushing: AnyObject {
    /// Whether the connection waits for its loop's ``ReplyFlusher`` this turn: kept by the
    /// flusher (set when it queues the connection, cleared before it flushes it).
    var flushQueued: Bool { get set }
    /// Writes and flushes the replies gathered during this turn.
    func flushGatheredReplies(context: ChannelHandlerContext)
}

/// The connections of one event loop that gathered replies during this turn of the loop, flushed
/// together once the loop has read from every connection that was ready, as Redis writes its
/// replies before it sleeps. A client with many connections (a proxy, a pool) is then woken once
/// for the replies of a turn rather than once per connection, and the loop is not descheduled by
/// every peer it wakes while other connections still wait to be read.
///
/// Confined to its event loop; `@unchecked Sendable` only so that the server's shared, immutable
/// configuration can hold one per loop.
package final class ReplyFlusher: @unchecked Sendable {
    private let eventLoop: any EventLoop
    private typealias Waiting = [(connection: any TurnEndFlushing, context: ChannelHandlerContext)]
    private var waiting: Waiting = []
    /// The list being flushed, swapped with `waiting`: both keep their storage from turn to turn.
    private var flushing: Waiting = []
    /// Made once: queueing it for a turn allocates nothing.
    private var flushAll: (() -> Void)!

    package init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        // Weak: a turn's task may outlive the server that made it (it then has nothing to flush).
        self.flushAll = { [weak self] in
            guard let self else { return }
            swap(&waiting, &flushing)
            for (connection, context) in flushing {
                connection.flushQueued = false
                connection.flushGatheredReplies(context: context)
            }
            flushing.removeAll(keepingCapacity: true)
        }
    }

    /// Flushes `connection`'s replies once the loop has handled every connection ready this turn;
    /// a connection already waiting is not queued again.
    package func flushAtEndOfTurn(_ connection: any TurnEndFlushing, context: ChannelHandlerContext) {
        guard !connection.flushQueued else { return }
        connection.flushQueued = true
        if waiting.isEmpty { eventLoop.assumeIsolated().execute(flushAll) }
        waiting.append((connection, context))
    }
}

/// One ``ReplyFlusher`` for every event loop of a group.
package struct ReplyFlushers: Sendable {
    private let byLoop: [ObjectIdentifier: ReplyFlusher]

    package init(group: any EventLoopGroup) {
        byLoop = Dictionary(
            uniqueKeysWithValues: group.makeIterator().map { (ObjectIdentifier($0), ReplyFlusher(eventLoop: $0)) })
    }

    /// The flusher of `eventLoop`; nil for a loop not of the group (the caller then flushes at once).
    package func flusher(for eventLoop: any EventLoop) -> ReplyFlusher? { byLoop[ObjectIdentifier(eventLoop)] }
}
