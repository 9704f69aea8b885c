/// How audit events are numbered: `seq` is unique and increases in the order events happen.
package struct AuditSequence: Sendable {
    package enum Scheme: Sendable {
        /// 1, 2, 3…: one process numbers every event of its store (SQLite).
        case dense
        /// `(milliseconds << 20) | (replica << 12) | counter`: each replica numbers its own events
        /// from its clock, so seqs are unique across up to 256 replicas (`replica` < 256) and
        /// increase with time across them, within their clocks' skew; a replica numbering more than
        /// 4,096 events in one millisecond borrows from the next one.
        case clock(replica: UInt64)
    }

    private let scheme: Scheme
    private var last: UInt64

    /// Numbers events after `last`, the highest seq the store holds (dense) or 0.
    package init(_ scheme: Scheme, after last: UInt64 = 0) {
        self.scheme = scheme
        self.last = last
    }

    /// The seq of an event stamped `atMS` (never earlier than the previous event's time).
    package mutating func next(atMS: Int64) -> UInt64 {
        switch scheme {
        case .dense:
            last += 1
        case .clock(let replica):
            let base = UInt64(max(atMS, 0)) << 20 | (replica & 0xFF) << 12
            if base > last {
                last = base
            } else if last & 0xFFF < 0xFFF {
                last += 1
            } else {
                last = ((last >> 20) + 1) << 20 | (replica & 0xFF) << 12
            }
        }
        return last
    }
}
