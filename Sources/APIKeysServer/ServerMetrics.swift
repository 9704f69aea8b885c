import APIKeysCore
import APIKeysStore
import CoreMetrics
import Dispatch
import Synchronization

/// The server's metrics, through swift-metrics: whoever serves them (the HTTP port's Prometheus
/// registry) passes the factory in ``ServerConfiguration/metricsFactory``. Names and labels
/// follow Prometheus conventions: `apikeyd_` prefix, base units, `_total` counters.
///
/// The check path costs two clock reads, one atomic increment and one histogram observation per
/// check (see docs/PERFORMANCE.md for what that costs); gauges are read when scraped.
public final class ServerMetrics: Sendable {
    /// Indexed by ``slot(of:)``: allowed, then each denial by its raw value.
    private let checks: [Counter]
    private let checkDuration: Timer
    private let adminCalls = Mutex<[String: Counter]>([:])
    private let auditQueueDepth: Gauge
    private let auditEventsWritten: Counter
    private let auditEventsCounted = Mutex<Int>(0)
    private let connectionsOpen: Gauge
    private let keys: Gauge
    /// On PostgreSQL: time since the replica's last confirmed catch-up, and changes known but not applied.
    private let replicaLag: Gauge
    private let replicaVersionsBehind: Gauge
    private let factory: any MetricsFactory

    init(factory: any MetricsFactory) {
        self.factory = factory
        let allowed = Counter(
            label: "apikeyd_checks_total", dimensions: [("decision", "allow"), ("reason", "none")], factory: factory)
        checks = [allowed] + Denial.allCases.map { denial in
            Counter(
                label: "apikeyd_checks_total", dimensions: [("decision", "deny"), ("reason", Self.reasonLabel(denial))],
                factory: factory)
        }
        checkDuration = Timer(label: "apikeyd_check_duration_seconds", preferredDisplayUnit: .seconds, factory: factory)
        auditQueueDepth = Gauge(label: "apikeyd_audit_queue_depth", factory: factory)
        auditEventsWritten = Counter(label: "apikeyd_audit_events_written_total", factory: factory)
        connectionsOpen = Gauge(label: "apikeyd_connections_open", factory: factory)
        keys = Gauge(label: "apikeyd_keys", factory: factory)
        replicaLag = Gauge(label: "apikeyd_replica_lag_seconds", factory: factory)
        replicaVersionsBehind = Gauge(label: "apikeyd_replica_versions_behind", factory: factory)
        Gauge(label: "apikeyd_build_info", dimensions: [("version", BuildInfo.version)], factory: factory).record(1)
    }

    /// Runs `answer` (a check and its reply) and, with `metrics`, counts the outcome and times it:
    /// the one way RPC Check and forward-auth record their checks. Nothing is recorded when
    /// `answer` throws. Without metrics, no clock is read.
    static func measured(_ metrics: ServerMetrics?, _ answer: () throws -> CheckOutcome) rethrows -> CheckOutcome {
        guard let metrics else { return try answer() }
        let started = DispatchTime.now().uptimeNanoseconds
        let outcome = try answer()
        metrics.checks[slot(of: outcome.denial)].increment()
        metrics.checkDuration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - started))
        return outcome
    }

    /// One KeyAdmin call finished with `status`.
    func recordAdminCall(method: String, status: String) {
        let counter = adminCalls.withLock { counters in
            let key = method + " " + status
            if let counter = counters[key] { return counter }
            let counter = Counter(
                label: "apikeyd_admin_calls_total", dimensions: [("method", method), ("status", status)], factory: factory)
            counters[key] = counter
            return counter
        }
        counter.increment()
    }

    /// Brings the gauges up to date; call before each scrape.
    func refresh(service: KeyService, openConnections: Int) {
        let audit = service.auditTrailCounts
        auditQueueDepth.record(audit.queued)
        let written = auditEventsCounted.withLock { counted in
            defer { counted = audit.written }
            return audit.written - counted
        }
        if written > 0 { auditEventsWritten.increment(by: written) }
        connectionsOpen.record(openConnections)
        keys.record(service.index.count)
        if let lag = service.replicaLag {
            replicaLag.record(lag.seconds)
            replicaVersionsBehind.record(lag.versionsBehind)
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
        }
    }
}

/// What this build is, for `apikeyd_build_info` and `--version`.
public enum BuildInfo {
    public static let version = "0.12.0-dev"
}
