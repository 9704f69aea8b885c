import APIKeysCore
import APIKeysStore
import Synchronization

/// One key mutation waiting for its group commit (``GroupCommit``), its result type erased.
struct PendingMutation: Sendable {
    /// The key the mutation reads (nil for a creation).
    let keyID: String?
    /// The admin token the mutation is made with, checked again in the batch's statement.
    let token: SecretHash?
    let deadline: Deadline
    /// Decides from the key's state: the writes, the admin events, and how to hand the caller its
    /// result once the batch has committed.
    let decide:
        @Sendable (StoredKey?) throws -> (writes: [KeyWrite], events: [AuditRecord], deliver: @Sendable () -> Void)
    /// Hands the caller an error instead.
    let fail: @Sendable (any Error) -> Void
}

/// Commits concurrent key mutations of one replica together: while one batch is in its
/// transaction, the mutations that arrive wait and go into the next one, up to ``maxBatch``.
///
/// On PostgreSQL a mutation's commit holds the change-log lock (see ``PostgresKeyStore``), so
/// commits are serial; one transaction for every mutation that is waiting turns N lock waits,
/// round trips and WAL flushes into one. A lone mutation is not delayed: a batch starts as soon
/// as the previous one ends.
final class GroupCommit: Sendable {
    /// The most mutations in one transaction.
    static let maxBatch = 64

    private let state = Mutex<(pending: [PendingMutation], draining: Bool)>(([], false))

    init() {}

    /// Queues `mutation` for the next batch; `commit` runs one batch and answers every mutation in
    /// it (deliver or fail, once each) — the same function for every submit.
    func submit(_ mutation: PendingMutation, commit: @escaping @Sendable ([PendingMutation]) async -> Void) {
        let start = state.withLock { state -> Bool in
            state.pending.append(mutation)
            if state.draining { return false }
            state.draining = true
            return true
        }
        if start { Task { await self.drain(commit) } }
    }

    private func drain(_ commit: @Sendable ([PendingMutation]) async -> Void) async {
        while true {
            let batch = state.withLock { state -> [PendingMutation] in
                let batch = Array(state.pending.prefix(Self.maxBatch))
                state.pending.removeFirst(batch.count)
                if batch.isEmpty { state.draining = false }
                return batch
            }
            if batch.isEmpty { return }
            await commit(batch)
        }
    }
}

extension GroupCommit {
    /// Submits a mutation and waits for its batch: `decide`'s result once committed, else the error.
    func run<R: Sendable>(
        reading keyID: String?, authorizedBy token: SecretHash?, deadline: Deadline,
        _ decide: @escaping @Sendable (StoredKey?) throws -> KeyDecision<R>,
        commit: @escaping @Sendable ([PendingMutation]) async -> Void
    ) async throws -> R {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<R, any Error>) in
            submit(
                PendingMutation(
                    keyID: keyID, token: token, deadline: deadline,
                    decide: { current in
                        let decision = try decide(current)
                        return (decision.writes, decision.events, { continuation.resume(returning: decision.result) })
                    },
                    fail: { continuation.resume(throwing: $0) }),
                commit: commit)
        }
    }
}

/// What a batch of mutations decided, before any of it is written: each mutation decides in turn
/// on the state the ones before it left (a rotation after a rotation of the same key sees the new
/// secret; a rename after a delete is NOT_FOUND), and the keys' final states are what is written.
struct GroupPlan: Sendable {
    /// What became of one mutation of the batch.
    enum Outcome: Sendable {
        case decided(deliver: @Sendable () -> Void)
        case refused(any Error)
    }

    /// One per mutation, in batch order.
    private(set) var outcomes: [Outcome] = []
    /// Every write, in decision order, with the time of its mutation's first event.
    private(set) var changes: [(write: KeyWrite, atMS: Int64)] = []
    /// The admin events, numbered.
    private(set) var events: [AuditRecord] = []
    /// The final rows: keys new to the table, keys changed, ids of keys gone.
    private(set) var inserted: [StoredKey] = []
    private(set) var updated: [StoredKey] = []
    private(set) var deleted: [String] = []

    /// Decides `batch` on the rows `read` (the keys it reads that exist), numbering admin events
    /// with `number` (an event's time → its seq).
    init(_ batch: [PendingMutation], read: [String: StoredKey], number: (Int64) -> UInt64) {
        var state: [String: StoredKey?] = read
        for mutation in batch {
            do {
                try mutation.deadline.check()
                var current: StoredKey?
                if let keyID = mutation.keyID {
                    guard let found = state[keyID] ?? nil else { throw KeyError.keyNotFound(id: keyID) }
                    current = found
                }
                let decision = try mutation.decide(current)
                let atMS = decision.events.first?.atMS ?? 0
                for write in decision.writes {
                    state[write.key.id] = .some(write.stored)
                    changes.append((write, atMS))
                }
                for var event in decision.events {
                    event.seq = number(event.atMS)
                    events.append(event)
                }
                outcomes.append(.decided(deliver: decision.deliver))
            } catch {
                outcomes.append(.refused(error))
            }
        }
        for id in Set(changes.map(\.write.key.id)).sorted() {
            switch (read[id] != nil, state[id] ?? nil) {
            case (false, let final?): inserted.append(final)
            case (true, let final?): updated.append(final)
            case (true, nil): deleted.append(id)
            case (false, nil): break
            }
        }
    }

    /// After the commit: hands each mutation its result, or its own refusal.
    func answer(_ batch: [PendingMutation]) {
        for (mutation, outcome) in zip(batch, outcomes) {
            switch outcome {
            case .decided(let deliver): deliver()
            case .refused(let error): mutation.fail(error)
            }
        }
    }
}
