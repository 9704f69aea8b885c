import APIKeysCore

/// What one audit batch says of a key's use: the time of its last check, and how many of its
/// checks were allowed (each spent a usage credit if the key has them).
package struct KeyUse: Sendable, Hashable {
    package var lastAtMS: Int64
    package var allowed: Int64

    package init(lastAtMS: Int64, allowed: Int64) {
        self.lastAtMS = lastAtMS
        self.allowed = allowed
    }

    /// The use of each key among `events` (in queue order, where times never decrease). Events of
    /// no key (unknown secrets) count for none. Runs of one key, the common case under load, cost
    /// a comparison per event, not a hash.
    package static func tally(_ events: ArraySlice<AuditRecord>) -> [String: KeyUse] {
        var uses: [String: KeyUse] = [:]
        var run = ""
        var runUse = KeyUse(lastAtMS: 0, allowed: 0)
        func endRun() {
            guard !run.isEmpty else { return }
            if let earlier = uses[run] {
                runUse.allowed += earlier.allowed
                runUse.lastAtMS = max(runUse.lastAtMS, earlier.lastAtMS)
            }
            uses[run] = runUse
        }
        for index in events.indices where !events[index].keyID.isEmpty && events[index].action == .apiRequest {
            if events[index].keyID != run {
                endRun()
                run = events[index].keyID
                runUse = KeyUse(lastAtMS: 0, allowed: 0)
            }
            runUse.lastAtMS = events[index].atMS
            if events[index].denial == nil && events[index].action == .apiRequest { runUse.allowed += 1 }
        }
        endRun()
        return uses
    }
}
