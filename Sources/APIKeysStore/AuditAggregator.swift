import APIKeysCore

/// How `api.request` events reach the audit trail.
public enum AuditMode: String, Sendable, CaseIterable {
    /// Every check is one event (the default).
    case full
    /// Allowed checks are counted per key, permissions and second, and written as one event per
    /// group when the second is over; denied checks are still written one by one. Opt-in, for
    /// loads where one row per check costs more than the audit is worth.
    case aggregated
}

/// Groups allowed `api.request` events per second, key and permissions (writer thread only).
struct AuditAggregator {
    private struct Key: Hashable {
        let keyID: String
        let permissions: [String]
    }

    private var groups = SecondGroups<Key>()

    var isEmpty: Bool { groups.isEmpty }

    /// Keeps `event` for later (true) if it is an allowed check without a detail; false: write it as is.
    mutating func absorbs(_ event: AuditRecord) -> Bool {
        // Checks with a detail (a grace secret) are kept one by one: the detail is the point.
        guard event.action == .apiRequest, event.denial == nil, event.detail.isEmpty else { return false }
        groups.add(event, to: Key(keyID: event.keyID, permissions: event.permissions))
        return true
    }

    /// The summary events of the groups of seconds before `nowMS` (all groups with nil),
    /// each numbered with the seq of its first check and stamped at the start of its second.
    mutating func drain(before nowMS: Int64?) -> [AuditRecord] {
        groups.drain(before: nowMS) { _, count, event in
            event.detail = "aggregated: \(count) allowed check\(count == 1 ? "" : "s") in this second"
            event.resource = ""
            event.clientAddress = ""
        }
    }
}
