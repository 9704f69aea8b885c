import APIKeysCore

/// Pruning of audit events older than the retention, as every store reports it: what one step
/// removed and the `audit.pruned` event that records it. How a store prunes is its own (SQLite:
/// `SQLiteAuditRetention` in APIKeysSQLite).
package enum AuditRetention {
    /// What one pruning transaction removed.
    package struct Pruned: Hashable, Sendable {
        package var batches = 0
        package var batchedEvents = 0
        package var rows = 0
        /// Links of the hash chain removed, and the anchor they left (the last one).
        package var links = 0
        package var anchor: AuditChain.Point?

        package var isEmpty: Bool { batches == 0 && rows == 0 && links == 0 }
        package var events: Int { batchedEvents + rows }

        package init(
            batches: Int = 0, batchedEvents: Int = 0, rows: Int = 0, links: Int = 0, anchor: AuditChain.Point? = nil
        ) {
            self.batches = batches
            self.batchedEvents = batchedEvents
            self.rows = rows
            self.links = links
            self.anchor = anchor
        }
    }

    /// The `audit.pruned` event for one step.
    package static func event(for pruned: Pruned, cutoffMS: Int64, retentionMS: Int64, seq: UInt64, nowMS: Int64)
        -> AuditRecord
    {
        AuditRecord(
            seq: seq, atMS: nowMS, action: .auditPruned, keyID: "", keyName: "", actor: "retention",
            detail:
                "pruned \(pruned.events) events older than \(cutoffMS) ms (retention \(retentionMS / 1000) s): "
                + "\(pruned.batchedEvents) api.request events in \(pruned.batches) batches, \(pruned.rows) rows"
                + (pruned.anchor.map { "; \(pruned.links) links of the hash chain, \(AuditChain.anchorDetail($0))" }
                    ?? ""))
    }
}
