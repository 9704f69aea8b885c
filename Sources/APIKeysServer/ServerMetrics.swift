import APIKeysCore
import APIKeysStore
import CoreMetrics
import Dispatch
import NIOCore
import Synchronization

/// The server's metrics, through swift-metrics: whoever serves them (the HTTP port's Prometheus
/// registry) passes the factory in ``ServerConfiguration/metricsFactory``. Names and labels
/// follow Prometheus conventions: `apikeyd_` prefix, base units, `_total` counters.
///
/// The check path costs two clock reads and three stores into its event loop's own
/// ``CheckTally`` per check (no lock, no cache line shared between loops), on the RPC port and
/// on the HTTP port's forward-auth alike; when scraped, the
/// tallies are added up into the check counters, and the check-latency histogram is written from
/// them (``checkDurationExposition()``): swift-metrics has no way to add a bucket's count in one
/// step. Gauges are read when scraped. See docs/PERFORMANCE.md for what it costs.
public final class ServerMetrics: Sendable {
    /// Indexed by ``slot(of:)``: allowed, then each denial by its raw value.
    private let checks: [Counter]
    /// How many slots ``slot(of:)`` has.
    /// A tally's outcome slots: allowed, and each denial.
    package static let slotCount = Denial.allCases.count + 1
    /// One per event loop of the RPC server, and of the ports added by ``countChecks(onLoopsOf:)``,
    /// by the loop's identity. Looked up once per connection.
    private let loopTallies: Mutex<[ObjectIdentifier: CheckTally]>
    /// For checks made off those loops, one at a time.
    private let elsewhere = Mutex<CheckTally>(CheckTally(outcomes: ServerMetrics.slotCount))
    /// The check counts already added to `checks`.
    private let exportedChecks = Mutex<[Int64]>(Array(repeating: 0, count: ServerMetrics.slotCount))
    private let adminCalls = Mutex<[String: Counter]>([:])
    private let auditQueueDepth: Gauge
    private let auditEventsWritten: ExportedTotal
    /// Free bytes on the SQLite audit trail's disk, and checks of unknown keys not recorded
    /// since start because it was below `--min-free-disk`.
    private let auditDiskFree: Gauge
    private let auditUnknownKeyChecksShed: Gauge
    private let connectionsOpen: Gauge
    private let keys: Gauge
    /// On PostgreSQL: time since the replica's last confirmed catch-up, and changes known but not applied.
    private let replicaLag: Gauge
    private let replicaVersionsBehind: Gauge
    /// Rewritten database histories found (``StoreFreshness/historyRewrites``), and the applied
    /// changes they lost.
    private let replicaHistoryRewrites: ExportedTotal
    private let replicaChangesLost: ExportedTotal
    /// Requests refused to hold a flood off (``Refusal``), and the refused admin-token reads
    /// (``KeyService/refusedAdminTokenReads``).
    private let refusals: [Refusal: Counter]
    private let adminTokenReadsRefused: ExportedTotal
    private let factory: any MetricsFactory

    /// Requests a port refuses at once, without working on them, so that a flood of them (from
    /// anyone: none needs a valid secret) cannot take what others need; counted so that an
    /// operator sees the flood.
    package enum Refusal: CaseIterable, Sendable {
        /// The admin API's `--admin-rate`: a caller with a token seen valid or a console session,
        /// or any other caller (who gets at most half the rate).
        case adminAPIRateVerified, adminAPIRateUnverified
        /// A leak report on the HTTP port while the most it takes at once are under way.
        case leakReportsInFlight

        var counter: (label: String, dimensions: [(String, String)]) {
            switch self {
            case .adminAPIRateVerified: ("apikeyd_admin_api_requests_refused_total", [("caller", "verified")])
            case .adminAPIRateUnverified: ("apikeyd_admin_api_requests_refused_total", [("caller", "unverified")])
            case .leakReportsInFlight: ("apikeyd_leak_reports_refused_total", [])
            }
        }
    }

    init(factory: any MetricsFactory, eventLoops: [any EventLoop]) {
        self.factory = factory
        loopTallies = Mutex(
            Dictionary(
                uniqueKeysWithValues: eventLoops.map { (ObjectIdentifier($0), CheckTally(outcomes: Self.slotCount)) }))
        let allowed = Counter(
            label: "apikeyd_checks_total", dimensions: [("decision", "allow"), ("reason", "none")], factory: factory)
        checks =
            [allowed]
            + Denial.allCases.map { denial in
                Counter(
                    label: "apikeyd_checks_total",
                    dimensions: [("decision", "deny"), ("reason", Self.reasonLabel(denial))],
                    factory: factory)
            }
        auditQueueDepth = Gauge(label: "apikeyd_audit_queue_depth", factory: factory)
        auditDiskFree = Gauge(label: "apikeyd_audit_disk_free_bytes", factory: factory)
        auditUnknownKeyChecksShed = Gauge(label: "apikeyd_audit_unknown_key_checks_shed", factory: factory)
        auditEventsWritten = ExportedTotal(Counter(label: "apikeyd_audit_events_written_total", factory: factory))
        connectionsOpen = Gauge(label: "apikeyd_connections_open", factory: factory)
        keys = Gauge(label: "apikeyd_keys", factory: factory)
        replicaLag = Gauge(label: "apikeyd_replica_lag_seconds", factory: factory)
        replicaVersionsBehind = Gauge(label: "apikeyd_replica_versions_behind", factory: factory)
        replicaHistoryRewrites = ExportedTotal(
            Counter(label: "apikeyd_replica_history_rewrites_total", factory: factory))
        replicaChangesLost = ExportedTotal(Counter(label: "apikeyd_replica_changes_lost_total", factory: factory))
        Gauge(label: "apikeyd_build_info", dimensions: [("version", BuildInfo.version)], factory: factory).record(1)
        refusals = Dictionary(
            uniqueKeysWithValues: Refusal.allCases.map {
                ($0, Counter(label: $0.counter.label, dimensions: $0.counter.dimensions, factory: factory))
            })
        adminTokenReadsRefused = ExportedTotal(
            Counter(label: "apikeyd_admin_token_reads_refused_total", factory: factory))
    }

    /// One request refused, as `refusal` says.
    package func countRefusal(_ refusal: Refusal) { refusals[refusal]?.increment() }

    /// The tally of the event loop `loop` (nil for a loop of no port).
    package func tally(for loop: any EventLoop) -> CheckTally? { loopTallies.withLock { $0[ObjectIdentifier(loop)] } }

    /// Gives every event loop of another port's `group` (the HTTP port's) a tally of its own,
    /// for the checks made on it. A tally, once given, stays (its counts are part of the totals).
    package func countChecks(onLoopsOf group: any EventLoopGroup) {
        loopTallies.withLock { tallies in
            for loop in group.makeIterator() where tallies[ObjectIdentifier(loop)] == nil {
                tallies[ObjectIdentifier(loop)] = CheckTally(outcomes: Self.slotCount)
            }
        }
    }

    /// Runs `answer` (a check and its reply) on the event loop whose tally is `tally` and, with a
    /// tally, counts the outcome and times it: how RPC Check records its checks. Nothing is
    /// recorded when `answer` throws. Without a tally, no clock is read.
    package static func measured(_ tally: CheckTally?, _ answer: () throws -> CheckOutcome) rethrows -> CheckOutcome {
        guard let tally else { return try answer() }
        let (outcome, nanoseconds) = try timed(answer)
        tally.record(slot: slot(of: outcome.denial), nanoseconds: nanoseconds)
        return outcome
    }

    /// ``measured(_:_:)`` from any thread, counted under a lock; without
    /// `metrics`, no clock is read.
    static func measuredElsewhere(_ metrics: ServerMetrics?, _ answer: () throws -> CheckOutcome) rethrows
        -> CheckOutcome
    {
        guard let metrics else { return try answer() }
        let (outcome, nanoseconds) = try timed(answer)
        metrics.elsewhere.withLock { $0.record(slot: slot(of: outcome.denial), nanoseconds: nanoseconds) }
        return outcome
    }

    private static func timed(_ answer: () throws -> CheckOutcome) rethrows -> (CheckOutcome, Int64) {
        let started = DispatchTime.now().uptimeNanoseconds
        let outcome = try answer()
        return (outcome, Int64(DispatchTime.now().uptimeNanoseconds - started))
    }

    /// Every tally added up.
    private var checkCounts: CheckTally.Counts {
        var total = elsewhere.withLock { $0.counts }
        for tally in loopTallies.withLock({ Array($0.values) }) { total.add(tally.counts) }
        return total
    }

    /// `apikeyd_check_duration_seconds` in the Prometheus text format, from the tallies: to be
    /// written after the registry's own metrics.
    public func checkDurationExposition() -> String {
        let counts = checkCounts
        let name = "apikeyd_check_duration_seconds"
        var text = "# TYPE \(name) histogram\n"
        var cumulative: Int64 = 0
        for (bound, count) in zip(CheckTally.bounds, counts.buckets) {
            cumulative += count
            text += "\(name)_bucket{le=\"\(Double(bound) / 1e9)\"} \(cumulative)\n"
        }
        cumulative += counts.buckets[CheckTally.bounds.count]
        text += "\(name)_bucket{le=\"+Inf\"} \(cumulative)\n"
        text += "\(name)_sum \(Double(counts.sumNanoseconds) / 1e9)\n"
        text += "\(name)_count \(cumulative)\n"
        return text
    }

    /// One KeyAdmin call finished with `status`.
    func recordAdminCall(method: String, status: String) {
        let counter = adminCalls.withLock { counters in
            let key = method + " " + status
            if let counter = counters[key] { return counter }
            let counter = Counter(
                label: "apikeyd_admin_calls_total", dimensions: [("method", method), ("status", status)],
                factory: factory)
            counters[key] = counter
            return counter
        }
        counter.increment()
    }

    /// Brings the gauges up to date; call before each scrape.
    func refresh(service: KeyService, openConnections: Int) {
        exportedChecks.withLock { exported in
            let counts = checkCounts.outcomes
            for slot in counts.indices where counts[slot] > exported[slot] {
                checks[slot].increment(by: counts[slot] - exported[slot])
                exported[slot] = counts[slot]
            }
        }
        let audit = service.auditTrailCounts
        auditQueueDepth.record(audit.queued)
        auditEventsWritten.catchUp(to: Int64(audit.written))
        connectionsOpen.record(openConnections)
        keys.record(service.index.count)
        let disk = service.auditDisk
        if let free = disk.freeBytes { auditDiskFree.record(free) }
        auditUnknownKeyChecksShed.record(disk.shedUnknownKeyChecks)
        if let lag = service.replicaLag {
            replicaLag.record(lag.seconds)
            replicaVersionsBehind.record(lag.versionsBehind)
        }
        adminTokenReadsRefused.catchUp(to: Int64(service.refusedAdminTokenReads))
        if let history = service.replicaHistoryRewrites {
            replicaHistoryRewrites.catchUp(to: history.rewrites)
            replicaChangesLost.catchUp(to: history.changesLost)
        }
    }

    private static func slot(of denial: Denial?) -> Int {
        guard let denial else { return 0 }
        return (Denial.allCases.firstIndex(of: denial) ?? 0) + 1
    }

    /// `malformed_key`, `missing_permission`…: the contract's reason names, lower case.
    public static func reasonLabel(_ denial: Denial) -> String {
        switch denial {
        case .malformedKey: "malformed_key"
        case .unknownKey: "unknown_key"
        case .disabled: "disabled"
        case .expired: "expired"
        case .missingPermission: "missing_permission"
        case .ipNotAllowed: "ip_not_allowed"
        case .rateLimited: "rate_limited"
        case .usageExceeded: "usage_exceeded"
        case .invalidRequest: "invalid_request"
        }
    }
}

/// What this build is, for `apikeyd_build_info` and `--version`.
public enum BuildInfo {
    public static let version = "0.12.0-dev"
}

/// A counter that follows a total counted elsewhere since start (events written, reads refused):
/// each scrape adds what the total gained since the scrape before.
private final class ExportedTotal: Sendable {
    private let counter: Counter
    private let exported = Mutex<Int64>(0)

    init(_ counter: Counter) { self.counter = counter }

    func catchUp(to total: Int64) {
        let gained = exported.withLock { exported in
            defer { exported = total }
            return total - exported
        }
        if gained > 0 { counter.increment(by: gained) }
    }
}
