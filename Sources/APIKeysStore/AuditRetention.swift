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
        /// Positions of traffic links emptied while history after them is kept (gaps).
        package var gaps: [ClosedRange<UInt64>] = []

        package var isEmpty: Bool { batches == 0 && rows == 0 && links == 0 && gaps.isEmpty }
        package var events: Int { batchedEvents + rows }

        package init(
            batches: Int = 0, batchedEvents: Int = 0, rows: Int = 0, links: Int = 0, anchor: AuditChain.Point? = nil,
            gaps: [ClosedRange<UInt64>] = []
        ) {
            self.batches = batches
            self.batchedEvents = batchedEvents
            self.rows = rows
            self.links = links
            self.anchor = anchor
            self.gaps = gaps
        }
    }

    /// What pruning removes: traffic older than `cutoffMS`, history (``AuditAction/isHistory``)
    /// older than `historyCutoffMS` (nil: history is kept).
    package struct Cutoffs: Hashable, Sendable {
        package var trafficMS: Int64
        package var historyMS: Int64?

        /// Cutoffs for `nowMS`: 0 retention = kept forever. History is kept at least as long as
        /// traffic.
        package init(nowMS: Int64, retentionMS: Int64, historyRetentionMS: Int64) {
            trafficMS = retentionMS > 0 ? nowMS - retentionMS : .min
            historyMS = historyRetentionMS > 0 ? min(trafficMS, nowMS - historyRetentionMS) : nil
        }

        package init(trafficMS: Int64, historyMS: Int64?) {
            self.trafficMS = trafficMS
            self.historyMS = historyMS
        }

        /// Whether a link stamped `atMS`, holding history or not, is past its retention.
        package func expires(atMS: Int64, history: Bool) -> Bool {
            atMS < trafficMS && (!history || historyMS.map { atMS < $0 } ?? false)
        }
    }

    /// Traffic links are emptied into gaps an hour at a time (the traffic cutoff rounded down
    /// to the hour): each pass that makes gaps writes an `audit.pruned` event, which is history
    /// and stays, so they are made some 24 times a day rather than at every one-minute pass.
    package static func gapCutoff(_ trafficCutoffMS: Int64) -> Int64 {
        trafficCutoffMS == .min ? .min : trafficCutoffMS - ((trafficCutoffMS % 3_600_000) + 3_600_000) % 3_600_000
    }

    /// Merges sorted positions into ranges of consecutive ones.
    package static func ranges(_ positions: [UInt64]) -> [ClosedRange<UInt64>] {
        var ranges: [ClosedRange<UInt64>] = []
        for position in positions {
            if let last = ranges.last, last.upperBound + 1 == position {
                ranges[ranges.count - 1] = last.lowerBound...position
            } else {
                ranges.append(position...position)
            }
        }
        return ranges
    }

    /// The `audit.pruned` event for one step.
    package static func event(
        for pruned: Pruned, cutoffs: Cutoffs, retentionMS: Int64, historyRetentionMS: Int64, seq: UInt64, nowMS: Int64
    ) -> AuditRecord {
        let history = historyRetentionMS > 0 ? "\(historyRetentionMS / 1000) s" : "forever"
        return AuditRecord(
            seq: seq, atMS: nowMS, action: .auditPruned, keyID: "", keyName: "", actor: "retention",
            detail:
                "pruned \(pruned.events) events older than \(cutoffs.trafficMS) ms (retention \(retentionMS / 1000) s, "
                + "key and admin-token history \(history)): "
                + "\(pruned.batchedEvents) api.request events in \(pruned.batches) batches, \(pruned.rows) rows"
                + (pruned.anchor.map { "; \(pruned.links) links of the hash chain, \(AuditChain.anchorDetail($0))" }
                    ?? "")
                + (pruned.gaps.isEmpty ? "" : "; " + AuditChain.gapDetail(pruned.gaps)))
    }
}
