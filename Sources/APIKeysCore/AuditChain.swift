internal import COpenSSLCrypto

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

        public init(position: UInt64, hash: [UInt8], events: [AuditRecord]) {
            self.position = position
            self.hash = hash
            self.events = events
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
            events: (_ index: Int) throws -> [AuditRecord]
        ) rethrows {
            var page: [(previousHash: [UInt8]?, link: Link)] = []
            var bytes = 0
            var (last, previous) = (start, startHash)
            for (index, stored) in links.enumerated() {
                let linked = try events(index)
                let size = linked.reduce(0) { $0 + $1.approximateEncodedSize }
                if !page.isEmpty && bytes + size > maxBytes { break }
                bytes += size
                page.append(
                    (
                        stored.position == last + 1 ? previous : nil,
                        Link(position: stored.position, hash: stored.hash, events: linked)
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
    }

    /// The links for one transaction's `events` (sorted by seq first): runs of at most
    /// `maxEvents` events and `maxBytes` of them (a run has at least one event).
    public static func pendingLinks(_ events: [AuditRecord], maxEvents: Int = .max, maxBytes: Int = .max)
        -> [PendingLink]
    {
        // Through the buffer: a loop over the records, or the array's subscript here, copies
        // each (ten retains and releases), and the writer takes these for every check it stores.
        events.withUnsafeBufferPointer { events in
            precondition(
                events.indices.dropFirst().allSatisfy { events[$0 - 1].seq < events[$0].seq },
                "events not in seq order")
            var links: [PendingLink] = []
            var start = 0
            while start < events.count {
                var (end, bytes) = (start + 1, events[start].approximateEncodedSize)
                let limit = start + min(maxEvents, events.count - start)
                while end < limit {
                    bytes += events[end].approximateEncodedSize
                    if bytes > maxBytes { break }
                    end += 1
                }
                let link = UnsafeBufferPointer(rebasing: events[start..<end])
                links.append(
                    PendingLink(
                        range: start..<end, firstSeq: events[start].seq, lastSeq: events[end - 1].seq,
                        atMS: link.indices.reduce(Int64.min) { max($0, link[$1].atMS) }, digest: digest(of: link)))
                start = end
            }
            return links
        }
    }

    /// An event as the digest reads it: a stored record, or an exported entry.
    public protocol DigestInput {
        var seq: UInt64 { get }
        var atMS: Int64 { get }
        /// The deny reason's number (`DenyReason`), 0 for none.
        var reasonNumber: UInt32 { get }
        var actionName: String { get }
        var keyID: String { get }
        var keyName: String { get }
        var actor: String { get }
        var detail: String { get }
        var permissions: [String] { get }
        var resource: String { get }
        var clientAddress: String { get }
    }

    /// The fields of an event the digest covers, as plain values (from a stored record, or from
    /// an exported `AuditEvent` whose action this version may not know).
    public struct Entry: Sendable, Hashable, DigestInput {
        public var seq: UInt64
        public var atMS: Int64
        public var action: String
        public var keyID: String
        public var keyName: String
        public var actor: String
        public var detail: String
        /// The deny reason's number (`DenyReason`), 0 for none.
        public var reason: UInt32
        public var permissions: [String]
        public var resource: String
        public var clientAddress: String

        public init(
            seq: UInt64, atMS: Int64, action: String, keyID: String, keyName: String, actor: String, detail: String,
            reason: UInt32, permissions: [String], resource: String, clientAddress: String
        ) {
            self.seq = seq
            self.atMS = atMS
            self.action = action
            self.keyID = keyID
            self.keyName = keyName
            self.actor = actor
            self.detail = detail
            self.reason = reason
            self.permissions = permissions
            self.resource = resource
            self.clientAddress = clientAddress
        }

        public init(_ record: AuditRecord) {
            self.init(
                seq: record.seq, atMS: record.atMS, action: record.action.rawValue, keyID: record.keyID,
                keyName: record.keyName, actor: record.actor, detail: record.detail,
                reason: UInt32(record.denial?.rawValue ?? 0), permissions: record.permissions,
                resource: record.resource, clientAddress: record.clientAddress)
        }

        public var reasonNumber: UInt32 { reason }
        public var actionName: String { action }
    }

    /// SHA-256 of the entries' bytes, in seq order.
    public static func digest(_ entries: [Entry]) -> [UInt8] {
        let inOrder = entries.indices.dropFirst().allSatisfy { entries[$0 - 1].seq < entries[$0].seq }
        return digest(of: inOrder ? entries : entries.sorted { $0.seq < $1.seq })
    }

    /// SHA-256 of the events' bytes, taken in the order given (seq order). The audit writer takes
    /// one per link it stores: the bytes are counted, then written into one buffer, and no field
    /// is copied.
    public static func digest<Events: Collection>(of events: Events) -> [UInt8] where Events.Element: DigestInput {
        var size = 0
        for index in events.indices { size += DigestWriter.size(of: events[index]) }
        let bytes = [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            var writer = DigestWriter(into: UnsafeMutableRawBufferPointer(buffer))
            for index in events.indices { writer.write(events[index]) }
            precondition(writer.offset == size, "digest bytes miscounted")
            count = size
        }
        return sha256(bytes)
    }

    /// Writes events in the digest's layout into a buffer ``size(of:)`` measured.
    private struct DigestWriter {
        let buffer: UnsafeMutableRawBufferPointer
        var offset = 0

        init(into buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }

        /// Fixed fields (seq, at_ms, reason) and eight byte counts.
        private static let fixedSize = 8 + 8 + 4 + 8 * 4

        static func size(of event: some DigestInput) -> Int {
            var size = fixedSize + event.actionName.utf8.count + event.keyID.utf8.count + event.keyName.utf8.count
            size += event.actor.utf8.count + event.detail.utf8.count + event.resource.utf8.count
            size += event.clientAddress.utf8.count
            var first = true
            forEachName(in: event.permissions) { name in
                size += name.count + (first ? 0 : 1)
                first = false
            }
            return size
        }

        mutating func write(_ event: some DigestInput) {
            write(event.seq)
            write(UInt64(bitPattern: event.atMS))
            write(event.reasonNumber)
            write(text: event.actionName)
            write(text: event.keyID)
            write(text: event.keyName)
            write(text: event.actor)
            write(text: event.detail)
            writeJoined(event.permissions)
            write(text: event.resource)
            write(text: event.clientAddress)
        }

        private mutating func write(_ value: some FixedWidthInteger) {
            withUnsafeBytes(of: value.littleEndian) { write(bytes: $0) }
        }

        private mutating func write(bytes: UnsafeRawBufferPointer) {
            guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
            (buffer.baseAddress! + offset).copyMemory(from: source, byteCount: bytes.count)
            offset += bytes.count
        }

        private mutating func write(text: String) {
            write(UInt32(text.utf8.count))
            Self.withUTF8(text) { write(bytes: UnsafeRawBufferPointer($0)) }
        }

        /// The permissions joined by single spaces, empty names left out (the form every store
        /// reads back): each name split at its spaces, as a stored list would be.
        private mutating func writeJoined(_ permissions: [String]) {
            let countAt = offset
            write(UInt32(0))
            var first = true
            Self.forEachName(in: permissions) { name in
                if !first { withUnsafeBytes(of: UInt8(0x20)) { write(bytes: $0) } }
                write(bytes: UnsafeRawBufferPointer(name))
                first = false
            }
            buffer.storeBytes(of: UInt32(offset - countAt - 4).littleEndian, toByteOffset: countAt, as: UInt32.self)
        }

        /// Each space-free run of bytes in `permissions`, in order.
        private static func forEachName(in permissions: [String], _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
            for permission in permissions {
                withUTF8(permission) { utf8 in
                    var index = 0
                    while index < utf8.count {
                        guard utf8[index] != 0x20 else {
                            index += 1
                            continue
                        }
                        var end = index + 1
                        while end < utf8.count, utf8[end] != 0x20 { end += 1 }
                        body(UnsafeBufferPointer(rebasing: utf8[index..<end]))
                        index = end
                    }
                }
            }
        }

        private static func withUTF8(_ text: String, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
            if text.utf8.withContiguousStorageIfAvailable(body) == nil {
                Array(text.utf8).withUnsafeBufferPointer(body)
            }
        }
    }

    /// A link's hash: SHA-256 of the previous link's hash and the link's digest.
    public static func linkHash(previous: [UInt8], digest: [UInt8]) -> [UInt8] {
        sha256(previous + digest)
    }

    /// How an `audit.pruned` event names the anchor its pruning left.
    public static func anchorDetail(_ anchor: Point) -> String {
        "the chain now starts after link \(anchor.position), hash \(hex(anchor.hash))"
    }

    /// The anchor an `audit.pruned` event's detail names, if it names one.
    public static func anchor(inDetail detail: String) -> Point? {
        let marker = "the chain now starts after link "
        guard let start = detail.firstRange(of: marker)?.upperBound else { return nil }
        let rest = detail[start...]
        guard let comma = rest.firstRange(of: ", hash "), let position = UInt64(rest[..<comma.lowerBound]),
            let hash = bytes(hex: String(rest[comma.upperBound...].prefix(64)))
        else { return nil }
        return Point(position: position, hash: hash)
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// 32 bytes from 64 hex digits; nil for anything else.
    public static func bytes(hex text: String) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count == 64 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: nil
            }
        }
        var out: [UInt8] = []
        for index in stride(from: 0, to: 64, by: 2) {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            out.append(high << 4 | low)
        }
        return out
    }

    static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeBytes { input in
            out.withUnsafeMutableBufferPointer {
                copensslcrypto_sha256(input.baseAddress, input.count, $0.baseAddress!)
            }
        }
        return out
    }
}

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

    /// A walk from `start`: the chain's anchor, or for a partial export its first link's
    /// previous point.
    public init(from start: AuditChain.Point) {
        self.start = start
        last = start
    }

    /// Checks the next link read; `state` is that of the page it came in (a prune while walking
    /// moves the anchor past links not yet read).
    public mutating func check(
        position: UInt64, hash: [UInt8], entries: [AuditChain.Entry], state: AuditChain.State
    ) throws(Break) {
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
        }
        last = AuditChain.Point(position: position, hash: hash)
        first = first ?? position
        links += 1
        events += entries.count
    }

    /// After the last link: the chain must end at the head and, when it was pruned, the newest
    /// `audit.pruned` event naming an anchor must name the one it starts from.
    public func finish(state: AuditChain.State) throws(Break) {
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
}
