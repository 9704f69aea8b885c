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
    private struct Group: Hashable {
        let second: Int64
        let keyID: String
        let permissions: [String]
    }

    private var groups: [Group: (first: AuditRecord, count: Int)] = [:]

    var isEmpty: Bool { groups.isEmpty }

    /// Keeps `event` for later if it is an allowed check without a detail; returns it otherwise (to write as is).
    mutating func absorb(_ event: AuditRecord) -> AuditRecord? {
        // Checks with a detail (a grace secret) are kept one by one: the detail is the point.
        guard event.action == .apiRequest, event.denial == nil, event.detail.isEmpty else { return event }
        let group = Group(second: event.atMS / 1000, keyID: event.keyID, permissions: event.permissions)
        if let existing = groups[group] {
            groups[group] = (existing.first, existing.count + 1)
        } else {
            groups[group] = (event, 1)
        }
        return nil
    }

    /// The summary events of the groups of seconds before `nowMS` (all groups with nil),
    /// each numbered with the seq of its first check and stamped at the start of its second.
    mutating func drain(before nowMS: Int64?) -> [AuditRecord] {
        let due = groups.filter { group, _ in nowMS.map { group.second < $0 / 1000 } ?? true }
        for group in due.keys { groups[group] = nil }
        return due.map { group, value in
            var event = value.first
            event.atMS = group.second * 1000
            event.detail = "aggregated: \(value.count) allowed check\(value.count == 1 ? "" : "s") in this second"
            event.resource = ""
            event.clientAddress = ""
            return event
        }.sorted { $0.seq < $1.seq }
    }
}
