/// Walks a chain link by link (an export, page by page) and finds the first break.
///
/// Feed it the links in the order read with ``check(_:previousHash:entries:state:)``, then call
/// ``finish(state:)`` with the state of the last page read.
public struct AuditChainVerifier: Sendable {
    /// Where and why the chain does not hold.
    public struct Break: Error, Sendable, Hashable, CustomStringConvertible {
        /// The link at which it breaks.
        public var position: UInt64
        public var reason: String

        public init(position: UInt64, reason: String) {
            self.position = position
            self.reason = reason
        }

        public var description: String { "link \(position): \(reason)" }
    }

    /// Where the walk started.
    public let start: AuditChain.Point
    /// The last link verified (or the start, before the first).
    public private(set) var last: AuditChain.Point
    /// Links and events verified so far.
    public private(set) var links = 0
    public private(set) var events = 0
    /// The first link verified, nil before it.
    public private(set) var first: UInt64?
    /// The anchor named by the newest `audit.pruned` event seen that names one.
    private var namedAnchor: AuditChain.Point?
    /// Positions read as gaps (events pruned, hash kept), and the ones `audit.pruned` events
    /// name as emptied: each gap must be named (``finish(state:)``).
    private var gaps: [ClosedRange<UInt64>] = []
    private var namedGaps: [ClosedRange<UInt64>] = []

    /// A walk from `start`: the chain's anchor, or for a partial export its first link's
    /// previous point.
    public init(from start: AuditChain.Point) {
        self.start = start
        last = start
    }

    /// Checks the next link read; `state` is that of the page it came in (a prune while walking
    /// moves the anchor past links not yet read). `prunedFrom`: the link is a gap (its events,
    /// and those of the links from that position on, were pruned; only its hash is kept): its
    /// hash is taken as it is, and an `audit.pruned` event must name the gap.
    public mutating func check(
        position: UInt64, hash: [UInt8], entries: [AuditChain.Entry], state: AuditChain.State,
        prunedFrom: UInt64? = nil
    ) throws(Break) {
        if let prunedFrom {
            guard position > last.position else {
                throw Break(position: position, reason: "comes again after link \(last.position)")
            }
            guard prunedFrom <= last.position + 1 else {
                let missing =
                    prunedFrom == last.position + 2
                    ? "link \(last.position + 1) is" : "links \(last.position + 1)–\(prunedFrom - 1) are"
                throw Break(position: position, reason: "\(missing) missing")
            }
            guard entries.isEmpty else {
                throw Break(position: position, reason: "a link whose events were pruned holds events")
            }
            gaps.append((last.position + 1)...position)
            last = AuditChain.Point(position: position, hash: hash)
            first = first ?? position
            links += 1
            return
        }
        if position != last.position + 1 {
            if state.anchor.position + 1 == position && state.anchor.position > last.position {
                // Pruned since the walk began: the links before it are gone by retention.
                last = state.anchor
            } else if position <= last.position {
                throw Break(position: position, reason: "comes again after link \(last.position)")
            } else {
                let missing =
                    position == last.position + 2
                    ? "link \(last.position + 1) is" : "links \(last.position + 1)–\(position - 1) are"
                throw Break(position: position, reason: "\(missing) missing")
            }
        }
        let computed = AuditChain.linkHash(previous: last.hash, digest: AuditChain.digest(entries))
        guard computed == hash else {
            let seqs = entries.map(\.seq)
            let events =
                seqs.isEmpty ? "its events (none kept)" : "its \(seqs.count) events (seq \(seqs.min()!)–\(seqs.max()!))"
            throw Break(
                position: position,
                reason:
                    "\(events) do not hash to its recorded hash (an event was edited, added or removed, or an earlier hash rewritten)"
            )
        }
        for entry in entries where entry.action == AuditAction.auditPruned.rawValue {
            if let anchor = AuditChain.anchor(inDetail: entry.detail) { namedAnchor = anchor }
            namedGaps += AuditChain.gaps(inDetail: entry.detail)
        }
        last = AuditChain.Point(position: position, hash: hash)
        first = first ?? position
        links += 1
        events += entries.count
    }

    /// After the last link: the chain must end at the head and, when it was pruned, the newest
    /// `audit.pruned` event naming an anchor must name the one it starts from.
    public func finish(state: AuditChain.State) throws(Break) {
        if let unnamed = gaps.first(where: { !Self.covers(namedGaps, $0) }) {
            throw Break(
                position: unnamed.upperBound,
                reason:
                    "links \(unnamed.lowerBound)–\(unnamed.upperBound) have no events and no audit.pruned event records their pruning"
            )
        }
        if last.position < state.head.position {
            throw Break(
                position: last.position + 1,
                reason: "the chain ends at link \(last.position) but its head is link \(state.head.position)")
        }
        guard last == state.head else {
            throw Break(
                position: last.position,
                reason:
                    "the last link is not the recorded head (\(state.head)): links were removed from the end or added")
        }
        if state.anchor.position > 0, let first, first == state.anchor.position + 1 {
            guard namedAnchor == state.anchor else {
                throw Break(
                    position: first,
                    reason:
                        "the chain starts after \(state.anchor), which no audit.pruned event records\(namedAnchor.map { " (the newest names \($0))" } ?? "")"
                )
            }
        }
    }

    /// Whether the union of `ranges` holds every position of `gap`.
    private static func covers(_ ranges: [ClosedRange<UInt64>], _ gap: ClosedRange<UInt64>) -> Bool {
        var next = gap.lowerBound
        for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) where range.lowerBound <= next {
            if range.upperBound >= gap.upperBound { return true }
            next = max(next, range.upperBound + 1)
        }
        return false
    }
}

extension AuditChainVerifier {
    /// A link as a walk reads it: what ``check(position:hash:entries:state:prunedFrom:)`` needs.
    public struct Reading: Sendable {
        public var position: UInt64
        public var hash: [UInt8]
        public var entries: [AuditChain.Entry]
        public var prunedFrom: UInt64?

        public init(position: UInt64, hash: [UInt8], entries: [AuditChain.Entry], prunedFrom: UInt64?) {
            (self.position, self.hash, self.entries, self.prunedFrom) = (position, hash, entries, prunedFrom)
        }
    }

    /// Reads a chain page by page, from the first page (`page(nil)`) to the head that page
    /// gave, each next page after the last link read (`page(position)`), hands each page to
    /// `onPage` (links past that head left out) and verifies every link against the one before
    /// it. `start` makes the verifier from the first page's state and first link (by default
    /// from the anchor). Throws ``Break`` at the first break, after `onPage` has seen its page.
    public static func walk<Link>(
        page: (_ after: UInt64?) async throws -> (state: AuditChain.State, links: [Link]),
        reading: (Link) -> Reading,
        start: (AuditChain.State, Link?) throws -> AuditChainVerifier = { state, _ in
            AuditChainVerifier(from: state.anchor)
        },
        onPage: (AuditChain.State, [Link]) async throws -> Void = { _, _ in }
    ) async throws -> AuditChainVerification {
        var after: UInt64?
        var verifier: AuditChainVerifier?
        var target: AuditChain.State?
        while true {
            let (state, links) = try await page(after)
            let first = target ?? state
            target = first
            let read = links.map { ($0, reading($0)) }.prefix { $0.1.position <= first.head.position }
            if verifier == nil { verifier = try start(state, read.first?.0) }
            try await onPage(state, read.map(\.0))
            for (_, link) in read {
                try verifier!.check(
                    position: link.position, hash: link.hash, entries: link.entries, state: state,
                    prunedFrom: link.prunedFrom)
            }
            guard let last = read.last?.1, last.position < first.head.position else { break }
            after = last.position
        }
        guard let verifier, let target else { throw Break(position: 0, reason: "no page read") }
        try verifier.finish(state: target)
        return AuditChainVerification(
            start: verifier.start, head: target.head, links: verifier.links, events: verifier.events)
    }
}

/// What a walk of the audit trail's hash chain verified (a client's
/// `verifyAuditChain`, or a store's own walk before a backup is put in place).
public struct AuditChainVerification: Sendable, Hashable {
    /// The point the walk started from: the chain's anchor, or the link before `sinceMS`.
    public var start: AuditChain.Point
    /// The head it reached: the chain's head when the walk began.
    public var head: AuditChain.Point
    public var links: Int
    public var events: Int

    public init(start: AuditChain.Point, head: AuditChain.Point, links: Int, events: Int) {
        self.start = start
        self.head = head
        self.links = links
        self.events = events
    }
}
