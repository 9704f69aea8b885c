import APIKeysCore

/// A row of `audit_links` (either store): where a link's events are, and its hash.
package struct StoredLink: Sendable {
    package var position: UInt64
    package var firstSeq: Int64
    package var lastSeq: Int64
    package var atMS: Int64
    package var count: Int64
    package var hash: [UInt8]
    /// A gap: the events of the links from this position to this one were pruned (``AuditChain/Link/prunedFrom``).
    package var prunedFrom: UInt64?

    package init(
        position: UInt64, firstSeq: Int64, lastSeq: Int64, atMS: Int64, count: Int64, hash: [UInt8],
        prunedFrom: UInt64? = nil
    ) {
        (self.position, self.firstSeq, self.lastSeq) = (position, firstSeq, lastSeq)
        (self.atMS, self.count, self.hash, self.prunedFrom) = (atMS, count, hash, prunedFrom)
    }

    /// The link as a point of the chain.
    package var point: AuditChain.Point { AuditChain.Point(position: position, hash: hash) }
}
