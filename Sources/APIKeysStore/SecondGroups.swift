import APIKeysCore

/// Events counted in groups per second (writer thread only): each group keeps its first event
/// and a count, and becomes one summary event once its second is over. What ``AuditAggregator``
/// and ``UnknownKeySampler`` both do with the events they do not write one by one.
struct SecondGroups<Key: Hashable> {
    private struct Group: Hashable {
        let second: Int64
        let key: Key
    }

    private var groups: [Group: (first: AuditRecord, count: Int)] = [:]

    var isEmpty: Bool { groups.isEmpty }

    /// Counts `event` in the group `key` of its second.
    mutating func add(_ event: AuditRecord, to key: Key) {
        let group = Group(second: event.atMS / 1000, key: key)
        if let existing = groups[group] {
            groups[group] = (existing.first, existing.count + 1)
        } else {
            groups[group] = (event, 1)
        }
    }

    /// The summary events of the groups of seconds before `nowMS` (all groups with nil), in seq
    /// order: each is its group's first event (so numbered with its seq) stamped at the start of
    /// its second, then given its detail by `summarize` from the group's key and count.
    mutating func drain(before nowMS: Int64?, _ summarize: (Key, Int, inout AuditRecord) -> Void) -> [AuditRecord] {
        let due = groups.filter { group, _ in nowMS.map { group.second < $0 / 1000 } ?? true }
        for group in due.keys { groups[group] = nil }
        return due.map { group, value in
            var event = value.first
            event.atMS = group.second * 1000
            summarize(group.key, value.count, &event)
            return event
        }.sorted { $0.seq < $1.seq }
    }
}
