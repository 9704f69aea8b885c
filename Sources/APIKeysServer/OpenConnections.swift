import NIOCore
import Synchronization

/// A port's open connections, at most `limit`. Past the limit a new connection takes the slot of
/// one that is not being served, which is closed: first the one that has waited longest on an
/// incomplete frame or request (a slowloris), else the one idle longest (nothing unanswered since
/// it opened or since its last answer). Only when every connection has complete traffic being
/// served is the new one closed instead. So a flood of slow or silent connections cannot keep a
/// client, a probe or a proxy out. Used by the RPC port, the HTTP port and the admin API's port.
package final class OpenConnections: Sendable {
    /// What a connection is doing, kept by its handler, read when a slot is needed.
    package final class Activity: Sendable {
        package enum Phase: UInt8 {
            /// Nothing unanswered.
            case idle = 0
            /// Bytes of a frame or request that is not complete yet.
            case incomplete = 1
            /// Complete traffic being served (calls in flight, replies backed up, reading paused).
            case busy = 2
        }

        private let phase = Atomic<UInt8>(Phase.idle.rawValue)
        /// When the phase began (`NIODeadline` nanoseconds).
        private let since = Atomic<UInt64>(NIODeadline.now().uptimeNanoseconds)

        package init() {}

        /// Enters `phase` now; staying in the phase keeps its start.
        package func set(_ phase: Phase, now: NIODeadline = .now()) {
            guard self.phase.exchange(phase.rawValue, ordering: .relaxed) != phase.rawValue else { return }
            since.store(now.uptimeNanoseconds, ordering: .relaxed)
        }

        /// Enters `phase` now, restarting its clock even when already in it.
        package func restart(_ phase: Phase, now: NIODeadline = .now()) {
            self.phase.store(phase.rawValue, ordering: .relaxed)
            since.store(now.uptimeNanoseconds, ordering: .relaxed)
        }

        package var current: (phase: Phase, since: UInt64) {
            (Phase(rawValue: phase.load(ordering: .relaxed)) ?? .busy, since.load(ordering: .relaxed))
        }
    }

    private struct Entry {
        let channel: any Channel
        let activity: Activity
    }

    private let entries = Mutex<[ObjectIdentifier: Entry]>([:])
    package let limit: Int

    package init(limit: Int) { self.limit = limit }

    package var count: Int { entries.withLock { $0.count } }

    /// Connections held now, and how many of them are not idle.
    package var counts: (all: Int, busy: Int) {
        entries.withLock { entries in
            (entries.count, entries.values.filter { $0.activity.current.phase != .idle }.count)
        }
    }

    /// The channels open now.
    package var channels: [any Channel] { entries.withLock { $0.values.map(\.channel) } }

    /// Counts `channel` until it closes, closing another connection to make room when at the
    /// limit (see the type); nil (not counted, to be closed) when no connection can give way.
    package func admit(_ channel: any Channel) -> Activity? {
        let id = ObjectIdentifier(channel)
        let activity = Activity()
        let admitted: (evicted: (any Channel)?, ok: Bool) = entries.withLock { entries in
            var evicted: (any Channel)?
            if entries.count >= limit {
                guard let victim = Self.victim(entries) else { return (nil, false) }
                evicted = entries.removeValue(forKey: victim)?.channel
            }
            entries[id] = Entry(channel: channel, activity: activity)
            return (evicted, true)
        }
        guard admitted.ok else { return nil }
        admitted.evicted?.close(promise: nil)
        channel.closeFuture.whenComplete { [self] _ in entries.withLock { _ = $0.removeValue(forKey: id) } }
        return activity
    }

    /// The connection to close for a newcomer: the longest incomplete, else the longest idle.
    private static func victim(_ entries: [ObjectIdentifier: Entry]) -> ObjectIdentifier? {
        var best: (id: ObjectIdentifier, phase: Activity.Phase, since: UInt64)?
        for (id, entry) in entries {
            let (phase, since) = entry.activity.current
            guard phase != .busy else { continue }
            if let current = best {
                let better =
                    phase == current.phase ? since < current.since : phase == .incomplete
                if !better { continue }
            }
            best = (id, phase, since)
        }
        return best?.id
    }
}
