import Synchronization

/// The checks of one event loop, counted by outcome and by latency bucket, without a lock or a
/// shared cache line: only that loop writes (relaxed loads and stores of its own cells, no
/// read-modify-write), and a scrape reads. ``ServerMetrics`` adds the tallies of every loop up
/// when scraped.
///
/// Cells: one per outcome slot (``ServerMetrics``'s order), one per latency bucket of
/// ``bounds`` plus one above the last, then the sum of the latencies in nanoseconds.
package final class CheckTally: @unchecked Sendable {  // every cell is an Atomic; one writer at a time
    /// Upper bounds of the latency buckets, in nanoseconds: 25 µs to 1 s.
    static let bounds: [Int64] = [
        25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 50_000_000,
        250_000_000, 1_000_000_000,
    ]

    /// What a tally holds, or the sum of several.
    struct Counts {
        var outcomes: [Int64]
        /// Per bucket, not cumulative; the last is above every bound.
        var buckets: [Int64]
        var sumNanoseconds: Int64

        init(outcomes: Int) {
            self.outcomes = Array(repeating: 0, count: outcomes)
            buckets = Array(repeating: 0, count: CheckTally.bounds.count + 1)
            sumNanoseconds = 0
        }

        mutating func add(_ other: Counts) {
            for i in outcomes.indices { outcomes[i] += other.outcomes[i] }
            for i in buckets.indices { buckets[i] += other.buckets[i] }
            sumNanoseconds += other.sumNanoseconds
        }
    }

    private let outcomeCount: Int
    private let cellCount: Int
    private let cells: UnsafeMutablePointer<Atomic<Int64>>

    package init(outcomes: Int) {
        outcomeCount = outcomes
        cellCount = outcomes + Self.bounds.count + 2
        cells = .allocate(capacity: cellCount)
        for i in 0..<cellCount { (cells + i).initialize(to: Atomic(0)) }
    }

    deinit {
        cells.deinitialize(count: cellCount)
        cells.deallocate()
    }

    /// Counts one check of outcome `slot` that took `nanoseconds`. Only one thread at a time.
    func record(slot: Int, nanoseconds: Int64) {
        var bucket = 0
        while bucket < Self.bounds.count && nanoseconds > Self.bounds[bucket] { bucket += 1 }
        add(1, at: slot)
        add(1, at: outcomeCount + bucket)
        add(nanoseconds, at: cellCount - 1)
    }

    private func add(_ amount: Int64, at cell: Int) {
        cells[cell].store(cells[cell].load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }

    /// The counts so far (each cell read once; a check counted meanwhile may be half in).
    var counts: Counts {
        var counts = Counts(outcomes: outcomeCount)
        for i in 0..<outcomeCount { counts.outcomes[i] = cells[i].load(ordering: .relaxed) }
        for i in counts.buckets.indices { counts.buckets[i] = cells[outcomeCount + i].load(ordering: .relaxed) }
        counts.sumNanoseconds = cells[cellCount - 1].load(ordering: .relaxed)
        return counts
    }
}
