import APIKeysCore
import APIKeysAdminAPI
import APIKeysHTTP
import APIKeysServer
import APIKeysStore
import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle

/// `apikeyd serve`: runs the server until SIGINT or SIGTERM; SIGHUP re-reads the TLS files.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Run the server (the default). Each option can also be set by the environment variable named in its help.")

    /// The defaults of every option: the library's, not a second copy of them.
    private static let defaults = ServerConfiguration()

    @Option(help: "Address to listen on (env APIKEYD_HOST).")
    var host: String = Environment.string("APIKEYD_HOST", default: defaults.host)

    @Option(help: "Port to listen on; 0 picks a free one (env APIKEYD_PORT).")
    var port: Int = Environment.int("APIKEYD_PORT", default: defaults.port)

    @OptionGroup var dataDirectory: StoreOptions

    @Option(
        help:
            "On PostgreSQL: how long checks are answered from the last state while the database cannot be reached, before they fail closed, e.g. 10s, 500ms (env APIKEYD_MAX_STALENESS)."
    )
    var maxStaleness: String = Environment.string("APIKEYD_MAX_STALENESS", default: "10s")

    @Option(
        help:
            "Port of the HTTP endpoints (/healthz, /readyz, /metrics, /authorize); off unless set (env APIKEYD_HTTP_PORT)."
    )
    var httpPort: Int?

    @Option(help: "Address of the HTTP port (env APIKEYD_HTTP_HOST).")
    var httpHost: String = Environment.string("APIKEYD_HTTP_HOST", default: "127.0.0.1")

    @Option(
        help:
            "Port of the JSON admin API (docs/openapi.json: keys, admin tokens, audit, /openapi.json); off unless set (env APIKEYD_ADMIN_PORT)."
    )
    var adminPort: Int?

    @Option(help: "Address of the admin API's port; loopback unless told (env APIKEYD_ADMIN_HOST).")
    var adminHost: String = Environment.string("APIKEYD_ADMIN_HOST", default: "127.0.0.1")

    @Option(
        help:
            "PEM certificate chain: serve the admin API over TLS (default: --tls-cert's, when set) (env APIKEYD_ADMIN_TLS_CERT)."
    )
    var adminTLSCert: String?

    @Option(help: "PEM private key of --admin-tls-cert (env APIKEYD_ADMIN_TLS_KEY).")
    var adminTLSKey: String?

    @Option(
        help:
            "Requests the admin API answers a second, all callers together, bursts of twice as many (one token, or all callers without a token seen valid together: at most half of it); 429 beyond; 0: no limit (env APIKEYD_ADMIN_RATE)."
    )
    var adminRate: Int = Environment.int("APIKEYD_ADMIN_RATE", default: 100)

    @Option(help: "Forward-auth route table: lines of METHOD PATH-PATTERN PERMISSION... (env APIKEYD_ROUTES).")
    var routes: String?

    @Option(
        help:
            "Peers whose forwarding header is believed, comma-separated networks (env APIKEYD_TRUSTED_PROXIES; default loopback: 127.0.0.0/8,::1/128). The client address of a request from one is the first untrusted address of that header, walked from the right; anyone else's header is ignored."
    )
    var trustedProxies: String = Environment.string("APIKEYD_TRUSTED_PROXIES", default: "127.0.0.0/8,::1/128")

    @Option(
        help:
            "The header the trusted proxies write client addresses into: x-forwarded-for or forwarded (RFC 7239) (env APIKEYD_FORWARDED_HEADER)."
    )
    var forwardedHeader: String = Environment.string("APIKEYD_FORWARDED_HEADER", default: "x-forwarded-for")

    @Option(
        help:
            "The proxy in front of /authorize: nginx (X-Original-Method/-URI), traefik (X-Forwarded-Method/-Uri; also Caddy) or envoy (the path after /authorize); the other kinds' headers are ignored (env APIKEYD_PROXY)."
    )
    var proxy: String = Environment.string("APIKEYD_PROXY", default: ProxyKind.nginx.rawValue)

    @Option(
        help:
            "Connections the HTTP port serves at once; past it a connection is closed on accept (env APIKEYD_MAX_HTTP_CONNECTIONS)."
    )
    var maxHTTPConnections: Int = Environment.int(
        "APIKEYD_MAX_HTTP_CONNECTIONS", default: HTTPFrontend.defaultMaxConnections)

    @Option(help: "PEM certificate chain: serve TLS 1.2+ on the RPC port, re-read on SIGHUP (env APIKEYD_TLS_CERT).")
    var tlsCert: String?

    @Option(help: "PEM private key of --tls-cert (env APIKEYD_TLS_KEY).")
    var tlsKey: String?

    @Option(help: "PEM CA file: callers must present a certificate it signed (mutual TLS) (env APIKEYD_TLS_CLIENT_CA).")
    var tlsClientCA: String?

    @Option(help: "Largest frame the server reads, in bytes (env APIKEYD_MAX_FRAME_SIZE).")
    var maxFrameSize: Int = Environment.int("APIKEYD_MAX_FRAME_SIZE", default: defaults.maxFrameSize)

    @Option(help: "Connections served at once (env APIKEYD_MAX_CONNECTIONS).")
    var maxConnections: Int = Environment.int("APIKEYD_MAX_CONNECTIONS", default: defaults.maxConnections)

    @Option(help: "Seconds without traffic before a connection is closed; 0 = never (env APIKEYD_IDLE_TIMEOUT).")
    var idleTimeout: Int = Environment.int("APIKEYD_IDLE_TIMEOUT", default: Int(defaults.idleTimeoutSeconds))

    @Option(
        help:
            "Seconds within which a frame that has begun must be complete, else the connection is closed (env APIKEYD_FRAME_TIMEOUT)."
    )
    var frameTimeout: Int = Environment.int("APIKEYD_FRAME_TIMEOUT", default: Int(defaults.frameTimeoutSeconds))

    @Option(
        help:
            "Seconds a graceful shutdown may take; audit events not written by then are counted in the last log line and the exit status is 1 (env APIKEYD_SHUTDOWN_TIMEOUT)."
    )
    var shutdownTimeout: Int = Environment.int(
        "APIKEYD_SHUTDOWN_TIMEOUT", default: Int(defaults.shutdownTimeoutSeconds))

    @Option(help: "KeyAdmin calls in flight per connection (env APIKEYD_MAX_ADMIN_CALLS).")
    var maxAdminCalls: Int = Environment.int("APIKEYD_MAX_ADMIN_CALLS", default: defaults.maxAdminCallsInFlight)

    @Option(
        help:
            "Event loop threads of the RPC port, and as many of the HTTP port; default one per core (env APIKEYD_EVENT_LOOPS)."
    )
    var eventLoops: Int = Environment.int("APIKEYD_EVENT_LOOPS", default: defaults.eventLoopThreads)

    @Option(help: "Prefix of the secrets this server issues (env APIKEYD_KEY_PREFIX).")
    var keyPrefix: String = Environment.string("APIKEYD_KEY_PREFIX", default: defaults.keyPrefix)

    @Option(
        help:
            "Replace the permission catalog: a file with one `name description` per line, # for comments (env APIKEYD_PERMISSIONS_FILE). Default: the ten permissions of the contract."
    )
    var permissionsFile: String?

    @Option(
        help:
            "Audit of checks: full (one event per check) or aggregated (allowed checks counted per key, permissions and second; denials one by one) (env APIKEYD_AUDIT_MODE)."
    )
    var auditMode: String = Environment.string("APIKEYD_AUDIT_MODE", default: defaults.auditMode.rawValue)

    @Option(
        help:
            "How long checks (api.request) and refused admin calls are kept in the audit trail: a duration (30d, 12h, 2w) or `forever` (or 0); older ones are pruned every minute (env APIKEYD_AUDIT_RETENTION; default 30d). Key and admin-token history has its own: --admin-audit-retention."
    )
    var auditRetention: String = Environment.string("APIKEYD_AUDIT_RETENTION", default: "30d")

    @Option(
        help:
            "How long key and admin-token history (key.*, admin_token.*, audit.pruned) is kept: `forever` (the default) or a duration no shorter than --audit-retention (env APIKEYD_ADMIN_AUDIT_RETENTION)."
    )
    var adminAuditRetention: String = Environment.string("APIKEYD_ADMIN_AUDIT_RETENTION", default: "forever")

    @Option(
        help:
            "Keys must expire within this (a duration: 90d, 12w) of when their expiry is set, at creation or update; `none` for no limit (env APIKEYD_MAX_KEY_LIFETIME; default none). Existing keys are not changed: `apikey report` lists those beyond it."
    )
    var maxKeyLifetime: String = Environment.string("APIKEYD_MAX_KEY_LIFETIME", default: "none")

    @Option(
        help:
            "SQLite: below this much free space on the database's disk (256m, 2g), checks of unknown keys are no longer recorded and /readyz says so (env APIKEYD_MIN_FREE_DISK)."
    )
    var minFreeDisk: String = Environment.string("APIKEYD_MIN_FREE_DISK", default: "256m")

    /// `--min-free-disk` in bytes; nil when it is not a size.
    private var minFreeDiskBytes: Int64? {
        let units: [Character: Int64] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30]
        guard let last = minFreeDisk.lowercased().last else { return nil }
        if let unit = units[last] { return Int64(minFreeDisk.dropLast()).flatMap { $0 >= 0 ? $0 * unit : nil } }
        return Int64(minFreeDisk).flatMap { $0 >= 0 ? $0 : nil }
    }

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (env APIKEYD_LOG_LEVEL).")
    var logLevel: String = Environment.string("APIKEYD_LOG_LEVEL", default: "info")

    @Option(help: "Log lines as text or json, one object a line (env APIKEYD_LOG_FORMAT).")
    var logFormat: String = Environment.string("APIKEYD_LOG_FORMAT", default: "text")

    /// `--max-key-lifetime` in seconds, 0 for `none`; nil when it is neither.
    private var maxKeyLifetimeSeconds: Int64? {
        maxKeyLifetime == "none" ? 0 : DurationText.seconds(maxKeyLifetime).flatMap { $0 > 0 ? $0 : nil }
    }

    private var auditRetentionSeconds: Int64? { Self.retentionSeconds(auditRetention) }
    private var adminAuditRetentionSeconds: Int64? { Self.retentionSeconds(adminAuditRetention) }

    /// A retention option in seconds, 0 for `forever`; nil when it is neither.
    private static func retentionSeconds(_ text: String) -> Int64? {
        ["forever", "0"].contains(text) ? 0 : DurationText.seconds(text)
    }

    private var httpPortSetting: Int? { httpPort ?? Environment.optionalString("APIKEYD_HTTP_PORT").flatMap(Int.init) }

    private var adminPortSetting: Int? {
        adminPort ?? Environment.optionalString("APIKEYD_ADMIN_PORT").flatMap(Int.init)
    }

    /// The admin API's certificate and key: its own, else the RPC port's.
    private var adminTLSFiles: TLSFiles? {
        let cert = adminTLSCert ?? Environment.optionalString("APIKEYD_ADMIN_TLS_CERT")
        let key = adminTLSKey ?? Environment.optionalString("APIKEYD_ADMIN_TLS_KEY")
        if let cert, let key { return TLSFiles(certificate: cert, privateKey: key) }
        if cert == nil, key == nil, let cert = tlsFiles.cert, let key = tlsFiles.key {
            return TLSFiles(certificate: cert, privateKey: key)
        }
        return nil
    }

    /// The TLS options, each from its flag or else its environment variable.
    private var tlsFiles: (cert: String?, key: String?, clientCA: String?) {
        (
            tlsCert ?? Environment.optionalString("APIKEYD_TLS_CERT"),
            tlsKey ?? Environment.optionalString("APIKEYD_TLS_KEY"),
            tlsClientCA ?? Environment.optionalString("APIKEYD_TLS_CLIENT_CA")
        )
    }

    /// `--trusted-proxies` as networks; nil when one of them is not a network.
    private var trustedProxyNetworks: [IPNetwork]? {
        let parts = trustedProxies.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        let networks = parts.compactMap(IPNetwork.init)
        return networks.count == parts.count ? networks : nil
    }

    func validate() throws {
        guard trustedProxyNetworks != nil else {
            throw ValidationError("--trusted-proxies is a comma-separated list of networks such as 10.0.0.0/8,::1")
        }
        guard ClientAddressPolicy.Header(rawValue: forwardedHeader) != nil else {
            throw ValidationError("--forwarded-header is x-forwarded-for or forwarded")
        }
        guard ProxyKind(rawValue: proxy) != nil else { throw ValidationError("--proxy is nginx, traefik or envoy") }
        guard minFreeDiskBytes != nil else { throw ValidationError("--min-free-disk is a size such as 256m or 2g") }
        guard maxHTTPConnections > 0 else { throw ValidationError("--max-http-connections must be positive") }
        guard (0...1_000_000).contains(adminRate) else { throw ValidationError("--admin-rate is 0 to 1000000") }
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format is text or json") }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown log level \"\(logLevel)\"")
        }
        guard (0...65535).contains(port) else { throw ValidationError("port must be 0-65535") }
        guard maxFrameSize >= 64 else { throw ValidationError("--max-frame-size must be at least 64") }
        guard maxConnections > 0, maxAdminCalls > 0, eventLoops > 0, idleTimeout >= 0, frameTimeout > 0,
            shutdownTimeout > 0
        else {
            throw ValidationError("limits must be positive")
        }
        _ = try SecretFormat(prefix: keyPrefix)
        if let port = httpPortSetting {
            guard (0...65535).contains(port) else { throw ValidationError("--http-port must be 0-65535") }
        }
        guard (routes ?? Environment.optionalString("APIKEYD_ROUTES")) == nil || httpPortSetting != nil else {
            throw ValidationError("--routes needs --http-port")
        }
        if let port = adminPortSetting {
            guard (0...65535).contains(port) else { throw ValidationError("--admin-port must be 0-65535") }
        }
        guard
            ((adminTLSCert ?? Environment.optionalString("APIKEYD_ADMIN_TLS_CERT")) == nil)
                == ((adminTLSKey ?? Environment.optionalString("APIKEYD_ADMIN_TLS_KEY")) == nil)
        else {
            throw ValidationError("--admin-tls-cert and --admin-tls-key go together")
        }
        guard (tlsFiles.cert == nil) == (tlsFiles.key == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        guard tlsFiles.clientCA == nil || tlsFiles.cert != nil else {
            throw ValidationError("--tls-client-ca needs --tls-cert")
        }
        guard AuditMode(rawValue: auditMode) != nil else { throw ValidationError("--audit-mode is full or aggregated") }
        guard auditRetentionSeconds != nil else {
            throw ValidationError("--audit-retention is a duration such as 30d, 12h or 2w, or forever")
        }
        guard let history = adminAuditRetentionSeconds else {
            throw ValidationError("--admin-audit-retention is forever or a duration such as 400d")
        }
        if history > 0, let traffic = auditRetentionSeconds, traffic == 0 || history < traffic {
            throw ValidationError("--admin-audit-retention may not be shorter than --audit-retention")
        }
        guard maxKeyLifetimeSeconds != nil else {
            throw ValidationError("--max-key-lifetime is a duration such as 90d or 12w, or none")
        }
    }

    func run() async throws {
        if logFormat == "json" { LoggingSystem.bootstrap(JSONLogHandler.init) }
        var logger = Logger(label: "apikeyd")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        var configuration = ServerConfiguration()
        configuration.host = host
        if let cert = tlsFiles.cert, let key = tlsFiles.key {
            configuration.tls = TLSFiles(certificate: cert, privateKey: key, clientCA: tlsFiles.clientCA)
        }
        configuration.port = port
        configuration.dataDirectory = dataDirectory.path
        configuration.databaseURL = dataDirectory.databaseURL
        guard let staleness = DurationText.milliseconds(maxStaleness) else {
            throw ValidationError("--max-staleness: \"\(maxStaleness)\" is not a duration such as 10s or 500ms")
        }
        configuration.maxStalenessMS = staleness
        configuration.maxFrameSize = maxFrameSize
        configuration.maxConnections = maxConnections
        configuration.idleTimeoutSeconds = Int64(idleTimeout)
        configuration.frameTimeoutSeconds = Int64(frameTimeout)
        configuration.shutdownTimeoutSeconds = Int64(shutdownTimeout)
        configuration.maxAdminCallsInFlight = maxAdminCalls
        configuration.eventLoopThreads = eventLoops
        configuration.keyPrefix = keyPrefix
        configuration.auditMode = AuditMode(rawValue: auditMode) ?? .full
        configuration.auditRetentionSeconds = auditRetentionSeconds ?? configuration.auditRetentionSeconds
        configuration.adminAuditRetentionSeconds = adminAuditRetentionSeconds ?? 0
        configuration.maxKeyLifetimeSeconds = maxKeyLifetimeSeconds ?? 0
        configuration.minFreeDiskBytes = minFreeDiskBytes ?? configuration.minFreeDiskBytes
        if let permissionsFile = permissionsFile ?? Environment.optionalString("APIKEYD_PERMISSIONS_FILE") {
            configuration.catalog = try PermissionCatalog(
                parsing: readTextFile(permissionsFile, option: "--permissions-file"))
        }

        var routeTable: RouteTable?
        if let routesFile = routes ?? Environment.optionalString("APIKEYD_ROUTES") {
            routeTable = try RouteTable(
                parsing: readTextFile(routesFile, option: "--routes"), catalog: configuration.catalog)
        }
        let metrics = httpPortSetting == nil ? nil : HTTPFrontend.makeMetrics()
        configuration.metricsFactory = metrics?.factory
        try FileDescriptorBudget.reserve(
            rpcConnections: maxConnections,
            httpConnections: (httpPortSetting == nil ? 0 : maxHTTPConnections)
                + (adminPortSetting == nil ? 0 : AdminAPI.Options(port: 0).maxConnections),
            logger: logger)
        let forwardAuth = ForwardAuthOptions(
            routes: routeTable,
            clientAddress: ClientAddressPolicy(
                trustedProxies: trustedProxyNetworks ?? ClientAddressPolicy.loopback,
                header: ClientAddressPolicy.Header(rawValue: forwardedHeader) ?? .xForwardedFor),
            proxy: ProxyKind(rawValue: proxy) ?? .nginx)
        let server = try await APIKeysServer.start(configuration: configuration, logger: logger)
        var services: [any Service] = [server]
        if let httpPort = httpPortSetting {
            do {
                services.append(
                    try await HTTPFrontend.start(
                        server: server, metrics: metrics, forwardAuth: forwardAuth, host: httpHost, port: httpPort,
                        maxConnections: maxHTTPConnections, logger: logger))
            } catch {
                await server.shutdown()
                throw ServerError.cannotListen(host: httpHost, port: httpPort, reason: "HTTP: \(error)")
            }
        }
        if let adminPort = adminPortSetting {
            do {
                services.append(
                    try await AdminAPI.start(
                        server: server,
                        options: .init(
                            host: adminHost, port: adminPort, tls: adminTLSFiles,
                            requestsPerSecond: UInt32(clamping: adminRate)),
                        logger: logger))
            } catch {
                await server.shutdown()
                throw ServerError.cannotListen(host: adminHost, port: adminPort, reason: "admin API: \(error)")
            }
        }
        // SIGHUP re-reads the TLS files; a failed reload keeps the current ones (and says why).
        signal(SIGHUP, SIG_IGN)
        let hangup = DispatchSource.makeSignalSource(signal: SIGHUP)
        hangup.setEventHandler { try? server.reloadTLS() }
        hangup.resume()
        defer { hangup.cancel() }
        services.append(ServiceManager.StoppingNotifier())
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        // Every port listens and the store is open: ready (systemd's Type=notify).
        ServiceManager.notify("READY=1")
        try await group.run()
    }
}

/// The text of a file named by `option`; one clear line when it cannot be read.
private func readTextFile(_ path: String, option: String) throws -> String {
    guard let data = FileManager.default.contents(atPath: path) else {
        let reason = access(path, F_OK) != 0 ? "no such file" : "not readable"
        throw ValidationError("\(option) \(path): \(reason)")
    }
    guard let text = String(data: data, encoding: .utf8) else {
        throw ValidationError("\(option) \(path): not UTF-8 text")
    }
    return text
}
