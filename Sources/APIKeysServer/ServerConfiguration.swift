import APIKeysCore
import APIKeysPostgres
import APIKeysStore
import APIKeysWire
import CoreMetrics
import NIOCore

/// Everything `apikeyd` can be told at start.
public struct ServerConfiguration: Sendable {
    /// Address to listen on.
    public var host = "127.0.0.1"
    /// TLS on the RPC port (optionally mutual); nil: plain TCP, for loopback only.
    public var tls: TLSFiles?
    /// Port to listen on; 0 picks a free one.
    public var port = 7411
    /// Directory of the SQLite database and the bootstrap admin token file.
    public var dataDirectory = "./data"
    /// `postgres://user@host:port/database`: keys, tokens and the audit trail in PostgreSQL, shared
    /// with other replicas (the data directory then holds only the first admin token's file);
    /// nil: SQLite in the data directory.
    public var databaseURL: String?
    /// On PostgreSQL: how long checks are answered from the last state while the database cannot
    /// be reached, before they fail closed (UNAVAILABLE).
    public var maxStalenessMS: Int64 = 10_000
    /// On PostgreSQL: a key change is acknowledged only once a synchronous standby has it
    /// (sessions run with `synchronous_commit = on`; a change is refused while the database's
    /// `synchronous_standby_names` is empty), so that a failover to that standby cannot lose it.
    public var requireSynchronousStandby = false
    /// Largest frame the server reads; a larger one closes the connection.
    public var maxFrameSize = Framing.defaultServerMaxFrameSize
    /// Connections served at once; more are closed as soon as they are accepted.
    public var maxConnections = 1024
    /// A connection with no traffic for this long is closed; 0 = never.
    public var idleTimeoutSeconds: Int64 = 3600
    /// A frame that has begun must be complete within this many seconds, else the connection is
    /// closed: a client trickling bytes or announcing more than it sends cannot hold a slot.
    public var frameTimeoutSeconds: Int64 = 5
    /// Bytes of replies queued for a client that does not read them before the server stops
    /// reading from it (NIO's high water mark; reading resumes below half of it).
    public var maxQueuedReplyBytes = 256 * 1024
    /// A graceful shutdown (KeyAdmin calls draining, the audit queue written) takes at most this
    /// long; audit events the disk still refuses then are counted and reported.
    public var shutdownTimeoutSeconds: Int64 = 10
    /// KeyAdmin calls in flight per connection; more are refused with RESOURCE_EXHAUSTED.
    public var maxAdminCallsInFlight = 64
    /// Event loop threads of the RPC port (the HTTP port, `HTTPFrontend`, takes as many of its own):
    /// one per core by default.
    public var eventLoopThreads = System.coreCount
    /// Prefix of the secrets this server issues and accepts.
    public var keyPrefix = SecretFormat.defaultPrefix
    /// The permission catalog.
    public var catalog = PermissionCatalog.standard
    /// Whether every check is its own audit event, or allowed checks are counted per second.
    public var auditMode = AuditMode.full
    /// Audit events older than this are pruned (every minute); 0 keeps them forever. The default,
    /// 30 days, covers the usual "what did this key do last month" and bounds the disk: at
    /// ~120 bytes an event, 1,000 checks/s keep ~310 GB (full audit).
    public var auditRetentionSeconds: Int64 = 30 * 86400
    /// Key and admin-token history (`key.*`, `admin_token.*`, `audit.pruned`) older than this is
    /// pruned; 0 (the default) keeps it forever, whatever the retention of checks. Never shorter
    /// than ``auditRetentionSeconds``.
    public var adminAuditRetentionSeconds: Int64 = 0
    /// Keys must be given an expiry at most this far ahead when created or updated; 0: no limit.
    public var maxKeyLifetimeSeconds: Int64 = 0
    /// Capacity of the audit queue before checks fail closed.
    public var auditQueueCapacity = KeyService.defaultAuditQueueCapacity
    /// SQLite: below this many free bytes on the database's disk, checks of unknown keys are no
    /// longer recorded and `/readyz` says so (checks of real keys are, as long as they fit).
    public var minFreeDiskBytes = KeyService.defaultMinFreeDiskBytes
    /// Wraps the store's audit sink (tests put faults there, such as a stalled disk); nil: none.
    package var decorateAuditSink: AuditSinkDecorator?
    /// Where the server's metrics go (the HTTP port's Prometheus registry); nil: none are kept.
    public var metricsFactory: (any MetricsFactory)?
    /// The clock that judges expiry; tests inject a manual one.
    public var clock: any WallClock = SystemWallClock()

    public init() {}

    /// The store in words, for logs: the database URL without its password, or the SQLite file.
    public var databaseDescription: String {
        guard let databaseURL else { return databasePath }
        return (try? PostgresLocation(url: databaseURL).description) ?? "an invalid PostgreSQL URL"
    }

    /// Path of the database file.
    public var databasePath: String { dataDirectory + "/apikeys.sqlite" }
    /// Path of the file holding the admin token created on first start.
    public var adminTokenPath: String { dataDirectory + "/admin.token" }
}
