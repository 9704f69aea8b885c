import APIKeysCore

/// Keeps checks of secrets that name no key (unknown keys: well-formed, never issued, rotated
/// away or deleted) from filling the audit trail (writer thread only).
///
/// Anyone who can reach a port can send such checks, each with up to ~5.2 KB of fields
/// (``CheckLimits``). Per second, the first check of each client address and reason is written
/// whole, at most ``maxSampledPerSecond`` of them in all; the rest are counted, per address and
/// reason, for at most ``maxSourcesPerSecond`` addresses (the others counted together), and each
/// count is written as one summary event when its second is over. While the disk is low
/// (``shedding``) they are not written at all, only counted (``shed``). Checks of real keys are
/// never touched: each stays one event.
struct UnknownKeySampler {
    /// Checks of unknown keys written whole per second, across all addresses.
    static let maxSampledPerSecond = 10
    /// Addresses counted apart per second; the checks of any more share one count.
    static let maxSourcesPerSecond = 100

    private struct Source: Hashable {
        /// nil: the addresses beyond ``maxSourcesPerSecond``.
        let address: String?
        let denial: Denial?
    }

    /// The checks not written whole, per source and second.
    private var counts = SecondGroups<Source>()
    /// Sources seen in the current second.
    private var seen: Set<Source> = []
    private var second: Int64 = .min
    private var sampledThisSecond = 0

    /// True while the disk is low: checks of unknown keys are dropped, only counted.
    var shedding = false
    /// Checks of unknown keys dropped while shedding.
    private(set) var shed = 0

    var isEmpty: Bool { counts.isEmpty }

    /// Whether any of `events` is a check of an unknown key (what ``absorbs(_:)`` may take), each
    /// read where it lies: most batches hold none, and filtering them would copy every record.
    static func anyUnknownKeyCheck(in events: [AuditRecord]) -> Bool {
        events.withUnsafeBufferPointer { events in
            guard let event = events.baseAddress else { return false }
            return events.indices.contains { (event + $0).isUnknownKeyCheck }
        }
    }

    /// False to write `event` whole; true when it was counted (or shed) instead.
    mutating func absorbs(_ event: AuditRecord) -> Bool {
        guard withUnsafePointer(to: event, \.isUnknownKeyCheck) else { return false }
        if shedding {
            shed += 1
            return true
        }
        let eventSecond = event.atMS / 1000
        if eventSecond != second {
            second = eventSecond
            seen.removeAll(keepingCapacity: true)
            sampledThisSecond = 0
        }
        var source = Source(address: event.clientAddress, denial: event.denial)
        if !seen.contains(source) {
            if seen.count >= Self.maxSourcesPerSecond {
                source = Source(address: nil, denial: event.denial)
            } else {
                seen.insert(source)
                if sampledThisSecond < Self.maxSampledPerSecond {
                    sampledThisSecond += 1
                    return false
                }
            }
        }
        counts.add(event, to: source)
        return true
    }

    /// The summary events of the seconds before `nowMS` (all with nil), each numbered with the
    /// seq of the first check it counts (which was not written) and stamped at its second's start.
    mutating func drain(before nowMS: Int64?) -> [AuditRecord] {
        counts.drain(before: nowMS) { source, count, event in
            let checks = "\(count) more check\(count == 1 ? "" : "s") of unknown keys"
            event.detail =
                source.address == nil
                ? "\(checks) from addresses beyond the \(Self.maxSourcesPerSecond) counted apart in this second"
                : "\(checks) from this address in this second, counted, not recorded one by one"
            event.clientAddress = source.address ?? ""
            event.permissions = []
            event.resource = ""
        }
    }
}

extension UnsafePointer<AuditRecord> {
    /// Whether the record here is a check of an unknown key (an api.request without a key id),
    /// what ``UnknownKeySampler`` samples; its fields read where they lie.
    fileprivate var isUnknownKeyCheck: Bool { pointee.action == .apiRequest && pointee.keyID.isEmpty }
}
