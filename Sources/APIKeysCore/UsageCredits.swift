import Synchronization

/// One key's usage credits on this server: how many allowed checks it was granted in all and how
/// many of them are spent, each an atomic counter shared by every event loop without a lock.
///
/// The store keeps both: the grant as set by KeyAdmin, the spent count raised by the audit writer
/// with the checks it commits. A server that starts takes the stored spent count; while it runs,
/// its own checks count here at once, and the counts other servers have stored reach it with its
/// next audit batch (``noteStored(spent:)``).
///
/// Compared by identity (what they count changes all the time).
public final class UsageCredits: Sendable, Hashable {
    public static func == (lhs: UsageCredits, rhs: UsageCredits) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }

    private let granted: Atomic<Int64>
    private let spent: Atomic<Int64>

    public init(granted: Int64, spent: Int64) {
        self.granted = Atomic(granted)
        self.spent = Atomic(spent)
    }

    /// Credits left now (never below 0).
    public var remaining: Int64 {
        max(0, granted.load(ordering: .relaxed) - spent.load(ordering: .relaxed))
    }

    /// Whether a credit is left, without spending it.
    public var hasCredit: Bool { remaining > 0 }

    /// Spends one credit: false when none was left.
    public func spend() -> Bool {
        var current = spent.load(ordering: .relaxed)
        while true {
            guard current < granted.load(ordering: .relaxed) else { return false }
            let (exchanged, original) = spent.compareExchange(
                expected: current, desired: current + 1, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }

    /// A new grant (a refill), from the key's stored state.
    public func grant(_ total: Int64) { granted.store(total, ordering: .relaxed) }

    /// The store's spent count, which holds other servers' checks too: never lowers this one's.
    public func noteStored(spent stored: Int64) {
        var current = spent.load(ordering: .relaxed)
        while current < stored {
            let (exchanged, original) = spent.compareExchange(
                expected: current, desired: stored, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }
}

/// A key's credits as stored: granted in all, and spent as far as the store knows.
public struct UsageGrant: Sendable, Hashable {
    public var granted: Int64
    public var spent: Int64

    public init(granted: Int64, spent: Int64) {
        self.granted = granted
        self.spent = spent
    }

    /// Credits left by the store's count.
    public var remaining: Int64 { max(0, granted - spent) }
}
