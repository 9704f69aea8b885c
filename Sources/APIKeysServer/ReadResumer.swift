import NIOCore

/// The connections of one event loop that stopped reading while the audit writer catches up, and
/// the one timer that lets them read again: one per event loop, not one per connection, so a
/// stalled disk with a thousand paused connections costs a check of the backlog a millisecond,
/// not a thousand.
///
/// Confined to its event loop (every method asserts it); `@unchecked Sendable` only so that the
/// server's shared, immutable configuration can hold one per loop.
final class ReadResumer: @unchecked Sendable {
    private let eventLoop: any EventLoop
    private let isBacklogged: @Sendable () -> Bool
    private var waiting: [() -> Void] = []
    private var poll: RepeatedTask?

    /// `isBacklogged`: true while connections should stay paused.
    init(eventLoop: any EventLoop, isBacklogged: @escaping @Sendable () -> Bool) {
        self.eventLoop = eventLoop
        self.isBacklogged = isBacklogged
    }

    /// Calls `resume` on the event loop once the backlog is gone (looked at every millisecond).
    func waitForBacklog(_ resume: @escaping () -> Void) {
        eventLoop.assertInEventLoop()
        waiting.append(resume)
        guard poll == nil else { return }
        poll = eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(1), delay: .milliseconds(1)) { [self] task in
            guard !isBacklogged() else { return }
            task.cancel()
            poll = nil
            let ready = waiting
            waiting = []
            for resume in ready { resume() }
        }
    }
}
