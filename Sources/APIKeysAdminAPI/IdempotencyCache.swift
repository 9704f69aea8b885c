import APIKeysCore
import HTTPTypes
import NIOCore
import Synchronization

/// What `Idempotency-Key` promises on the POSTs that create: a retry with the same key (same
/// admin token, same path, same body) gets the first answer again and creates nothing; the same
/// key with another body is refused (422); a retry while the first is still running waits for
/// nothing and is told so (409). Only successful answers are kept (a failed create changed
/// nothing, so its retry runs again), for ``retention`` and at most ``capacity`` of them, the
/// oldest dropped first. Kept in this server's memory: a retry that reaches another replica, or
/// this one after a restart, is a new request.
final class IdempotencyCache: Sendable {
    struct Key: Hashable, Sendable {
        let actor: String
        let path: String
        let idempotencyKey: String
    }

    /// What a request with a key may do.
    enum Claim: Equatable {
        /// Run it; ``finish(_:fingerprint:status:body:nowMS:)`` or ``abandon(_:)`` afterwards.
        case run
        /// Answer with what the first request was answered.
        case replay(status: HTTPResponse.Status, body: ByteBuffer)
        case inProgress
        case differentRequest
    }

    private enum Entry {
        case running(fingerprint: SecretHash)
        case done(fingerprint: SecretHash, status: HTTPResponse.Status, body: ByteBuffer, atMS: Int64)
    }

    private struct State {
        var entries: [Key: Entry] = [:]
        /// Keys in the order they were claimed, for dropping the oldest.
        var order: [Key] = []
    }

    let capacity: Int
    let retentionMS: Int64
    private let state = Mutex(State())

    init(capacity: Int = 10_000, retentionMS: Int64 = 24 * 3_600_000) {
        self.capacity = capacity
        self.retentionMS = retentionMS
    }

    func claim(_ key: Key, fingerprint: SecretHash, nowMS: Int64) -> Claim {
        state.withLock { state in
            switch state.entries[key] {
            case .running(let first):
                return first == fingerprint ? .inProgress : .differentRequest
            case .done(let first, let status, let body, let atMS) where nowMS - atMS < retentionMS:
                return first == fingerprint ? .replay(status: status, body: body) : .differentRequest
            case .done, nil:
                if state.entries.updateValue(.running(fingerprint: fingerprint), forKey: key) != nil {
                    state.order.removeAll { $0 == key }  // an expired answer, claimed anew
                }
                state.order.append(key)
                Self.evict(&state, capacity: capacity)
                return .run
            }
        }
    }

    func finish(_ key: Key, fingerprint: SecretHash, status: HTTPResponse.Status, body: ByteBuffer, nowMS: Int64) {
        state.withLock { state in
            guard state.entries[key] != nil else { return }
            state.entries[key] = .done(fingerprint: fingerprint, status: status, body: body, atMS: nowMS)
        }
    }

    func abandon(_ key: Key) {
        state.withLock { state in
            guard case .running = state.entries[key] else { return }
            state.entries[key] = nil
            state.order.removeAll { $0 == key }
        }
    }

    private static func evict(_ state: inout State, capacity: Int) {
        while state.entries.count > capacity,
            let oldest = state.order.firstIndex(where: { key in
                if case .done = state.entries[key] { true } else { false }
            })
        {
            state.entries[state.order.remove(at: oldest)] = nil
        }
    }
}
