import APIKeysCore

/// How far behind the audit writer is, for a server deciding whose reading to pause: while it is
/// ``behind`` (its queue more than half full) the connections adding most to it stop reading
/// first; once it is ``nearlyFull`` (more than 7/8) every connection does, before checks would
/// fail closed.
public enum AuditPressure: Sendable, Hashable {
    case none
    case behind
    case nearlyFull
}

/// Wraps the sink a store hands its ``AuditWriter``: how tests put a fault between the writer and
/// the database (a sink that holds its writes, as a stalled disk would) without hooks in the
/// writer. Stores use the sink as it is when none is given.
package typealias AuditSinkDecorator = @Sendable (any AuditSink) -> any AuditSink

/// Where an ``AuditWriter`` stores events: called on the writer's thread only, one call at a time.
package protocol AuditSink: Sendable {
    /// Stores `individual` api.request events (in seq order), aggregated `summaries`, and raises
    /// the keys' last-used times and spent usage credits (``KeyUse``, by key id), all in one
    /// transaction.
    func write(_ individual: [AuditRecord], summaries: [AuditRecord], lastUsed: [String: KeyUse]) throws
    /// Removes one step of events past `cutoffs` in one transaction, with the event that
    /// `record` makes of what it removed; returns what it removed (empty: nothing was left).
    /// Whole links go from the oldest while they are past both cutoffs (the anchor moves);
    /// traffic links past the traffic cutoff with history kept before them lose their events
    /// and become gaps (``AuditChain/Link/prunedFrom``).
    func pruneStep(
        _ cutoffs: AuditRetention.Cutoffs, recording record: @escaping @Sendable (AuditRetention.Pruned) -> AuditRecord
    ) throws
        -> AuditRetention.Pruned
    /// Gives the space freed by pruning back to the file system, where that applies.
    func reclaimSpace() throws
    /// Bytes free to this process on the file system the events are written to; nil when that
    /// is not a local file system (a database server's disk is its operator's to watch).
    func freeBytes() -> Int64?
    /// Releases the sink's connection; no call follows.
    func close()
}
