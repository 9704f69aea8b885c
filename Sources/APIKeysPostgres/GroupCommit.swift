import APIKeysCore
import APIKeysStore
import Synchronization

/// One key mutation waiting for its group commit (``GroupCommit``), its result type erased.
struct PendingMutation: Sendable {
    /// The key the mutation reads (nil for a creation).
    let keyID: String?
    let deadline: Deadline
    /// Decides from the key's state: the writes, the admin events, and how to hand the caller its
    /// result once the batch has committed.
    let decide: @Sendable (StoredKey?) throws -> (writes: [KeyWrite], events: [AuditRecord], deliver: @Sendable () -> Void)
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
        reading keyID: String?, deadline: Deadline, _ decide: @escaping @Sendable (StoredKey?) throws -> KeyDecision<R>,
        commit: @escaping @Sendable ([PendingMutation]) async -> Void
    ) async throws -> R {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<R, any Error>) in
            submit(
                PendingMutation(
                    keyID: keyID, deadline: deadline,
                    decide: { current in
                        let decision = try decide(current)
                        return (decision.writes, decision.events, { continuation.resume(returning: decision.result) })
                    },
                    fail: { continuation.resume(throwing: $0) }),
                commit: commit)
        }
    }
}
