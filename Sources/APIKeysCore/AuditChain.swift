/// The hash chain that makes the stored audit trail tamper-evident.
///
/// Events are stored in *links*: the events one transaction writes (an admin change's, or up to
/// ``maxEventsPerLink`` of the audit writer's at a time). Links are numbered from 1 in commit
/// order, across every writer of the store, and each carries
/// `hash = SHA-256(previous link's hash ‖ digest of its events)`, the first one's previous hash
/// being 32 zero bytes (``genesis``). Editing, adding or removing an event changes its link's
/// digest; removing a link leaves a gap in the positions; recomputing every later hash changes
/// the head, which a copy kept elsewhere (`apikey audit export`) still has.
///
/// Pruning by retention removes the oldest links: the store keeps the last removed link's
/// position and hash as the chain's *anchor*, and the `audit.pruned` event written with the
/// removal names it (``anchorDetail(_:)``), so the chain is verified from the anchor on.
/// Traffic links (checks) older than the retention but newer than history that is kept (key and
/// admin-token events, ``AuditAction/isHistory``) lose their events instead: a run of them is
/// kept as one *gap* link, the run's last position and hash with the position it starts from
/// (``Link/prunedFrom``), and the `audit.pruned` event names the positions it emptied
/// (``gapDetail(_:)``). A gap no such event names is a break.
///
/// The digest is over each event in seq order, as these bytes (little-endian integers): seq
/// (u64), at_ms (i64), the deny reason's number (u32, 0 = none), then action, key_id, key_name,
/// actor, detail, the permissions joined by single spaces (empty names left out), resource and
/// client_address, each as a u32 byte count and its UTF-8 bytes. docs/PROTOCOL.md says the same
/// for clients that verify an export.
public enum AuditChain {
    /// The previous hash of link 1.
    public static let genesis = [UInt8](repeating: 0, count: 32)

    /// Most events in one link the audit writer stores (as many as one packed batch row holds,
    /// so a link of checks is one row).
    public static let maxEventsPerLink = 2048

    /// Most bytes of events (``AuditRecord/approximateEncodedSize``) in one link the audit writer
    /// stores, past its first event: keeps a link, and the export page that holds it whole, far
    /// below the client's frame limit whatever the events hold.
    public static let maxLinkBytes = 1 << 20

    /// A point of the chain: a link's position and hash (position 0 is before the first link).
    public struct Point: Sendable, Hashable, CustomStringConvertible {
        public var position: UInt64
        public var hash: [UInt8]

        public init(position: UInt64, hash: [UInt8]) {
            self.position = position
            self.hash = hash
        }

        public static let start = Point(position: 0, hash: AuditChain.genesis)

        public var description: String { "link \(position) (hash \(AuditChain.hex(hash)))" }
    }

    /// Where a store's chain starts (its anchor: the last link pruned) and ends (its head).
    public struct State: Sendable, Hashable {
        public var anchor: Point
        public var head: Point

        public init(anchor: Point, head: Point) {
            self.anchor = anchor
            self.head = head
        }
    }

    /// One stored link as read back: its events, in seq order.
    public struct Link: Sendable, Hashable {
        public var position: UInt64
        public var hash: [UInt8]
        public var events: [AuditRecord]
        /// A gap: the events of links `prunedFrom` through `position` were pruned and only this
        /// link's hash is kept (``events`` is empty); nil for a link with its events.
        public var prunedFrom: UInt64?

        public init(position: UInt64, hash: [UInt8], events: [AuditRecord], prunedFrom: UInt64? = nil) {
            self.position = position
            self.hash = hash
            self.events = events
            self.prunedFrom = prunedFrom
        }
    }

    /// A page of the chain (``KeyStore``'s export): the state when it was read and the links
    /// after the asked position, each with the hash of the one before it when that is kept.
    public struct Page: Sendable {
        public var state: State
        public var links: [(previousHash: [UInt8]?, link: Link)]

        public init(state: State, links: [(previousHash: [UInt8]?, link: Link)]) {
            self.state = state
            self.links = links
        }

        /// The stored links after position `start` (whose hash is `startHash`, nil when
        /// unknown), in order, each with the events `events` reads for it (by its index in
        /// `links`), until `maxBytes` of
        /// events (at least one link). A link's predecessor hash is given only when the link
        /// before it is in the page or is `start`.
        public init(
            state: State, after start: UInt64, startHash: [UInt8]?, maxBytes: Int, links: [Point],
            prunedFrom: (_ index: Int) -> UInt64? = { _ in nil }, events: (_ index: Int) throws -> [AuditRecord]
        ) rethrows {
            var page: [(previousHash: [UInt8]?, link: Link)] = []
            var bytes = 0
            var (last, previous) = (start, startHash)
            for (index, stored) in links.enumerated() {
                let gapFrom = prunedFrom(index)
                let linked = gapFrom == nil ? try events(index) : []
                let size = linked.reduce(0) { $0 + $1.approximateEncodedSize }
                if !page.isEmpty && bytes + size > maxBytes { break }
                bytes += size
                page.append(
                    (
                        stored.position == last + 1 ? previous : nil,
                        Link(position: stored.position, hash: stored.hash, events: linked, prunedFrom: gapFrom)
                    ))
                (last, previous) = (stored.position, stored.hash)
            }
            self.init(state: state, links: page)
        }
    }

    /// A link about to be written: which events it holds (a range of the transaction's events,
    /// sorted by seq) and what the store records of it.
    public struct PendingLink: Sendable {
        public var range: Range<Int>
        /// Its lowest seq, which each of its stored events carries as its link.
        public var firstSeq: UInt64
        public var lastSeq: UInt64
        /// Its latest event's time (pruning removes a link when that is past the retention).
        public var atMS: Int64
        public var count: Int { range.count }
        public var digest: [UInt8]
        /// Whether any of its events is history (``AuditAction/isHistory``): such a link is
        /// pruned under the history's retention.
        public var holdsHistory: Bool
    }

    /// The links for one transaction's `events` (sorted by seq first): runs of at most
    /// `maxEvents` events and `maxBytes` of them (a run has at least one event).
    public static func pendingLinks(_ events: [AuditRecord], maxEvents: Int = .max, maxBytes: Int = .max)
        -> [PendingLink]
    {
        // Each record read where it lies, its stored fields through a pointer: a loop over the
        // records, or a property of a record called through a subscript, copies it (ten retains
        // and releases), and the writer takes these for every check it stores.
        events.withUnsafeBufferPointer { events in
            guard let event = events.baseAddress else { return [] }
            precondition(
                events.indices.dropFirst().allSatisfy { event[$0 - 1].seq < event[$0].seq }, "events not in seq order")
            var links: [PendingLink] = []
            var start = 0
            while start < events.count {
                var (end, bytes) = (start + 1, (event + start).approximateEncodedSize)
                let limit = start + min(maxEvents, events.count - start)
                while end < limit {
                    bytes += (event + end).approximateEncodedSize
                    if bytes > maxBytes { break }
                    end += 1
                }
                var (atMS, holdsHistory) = (Int64.min, false)
                for index in start..<end {
                    atMS = max(atMS, event[index].atMS)
                    holdsHistory = holdsHistory || event[index].action.isHistory
                }
                links.append(
                    PendingLink(
                        range: start..<end, firstSeq: event[start].seq, lastSeq: event[end - 1].seq, atMS: atMS,
                        digest: digest(of: UnsafeBufferPointer(rebasing: events[start..<end])),
                        holdsHistory: holdsHistory))
                start = end
            }
            return links
        }
    }
}
