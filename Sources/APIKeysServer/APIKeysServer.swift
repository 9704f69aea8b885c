import APIKeysCore
import APIKeysPostgres
import APIKeysSQLite
import APIKeysStore
import APIKeysWire
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
#if canImport(Glibc)
    import Glibc
#endif

/// The apikeyd server: KeyAdmin and Authorize over length-prefixed protobuf frames on TCP.
///
/// ```swift
/// let server = try await APIKeysServer.start(configuration: config, logger: logger)
/// try await ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger).run()
/// ```
public final class APIKeysServer: Service, Sendable {
    public let configuration: ServerConfiguration
    /// The key authority the server answers from.
    public let service: KeyService
    /// The port the server listens on (the chosen one when configured with 0).
    public let port: Int
    private let group: MultiThreadedEventLoopGroup
    private let serverChannel: any Channel
    private let state: ServerState
    /// SQLite only: the data directory is this server's alone.
    private let directoryLock: DataDirectoryLock?
    private let tls: ServerTLS?
    private let logger: Logger
    /// The server's metrics, when ``ServerConfiguration/metricsFactory`` is set.
    public let metrics: ServerMetrics?
    /// The way into KeyAdmin for every admin surface (this port's and the HTTP admin API).
    public let adminGate: AdminGate

    private init(
        configuration: ServerConfiguration, service: KeyService, port: Int, group: MultiThreadedEventLoopGroup,
        serverChannel: any Channel, state: ServerState, directoryLock: DataDirectoryLock?,
        tls: ServerTLS?, metrics: ServerMetrics?, adminGate: AdminGate, logger: Logger
    ) {
        self.adminGate = adminGate
        self.tls = tls
        self.metrics = metrics
        self.configuration = configuration
        self.service = service
        self.port = port
        self.group = group
        self.serverChannel = serverChannel
        self.state = state
        self.directoryLock = directoryLock
        self.logger = logger
    }

    /// Opens the data directory (creating it and a first admin token if needed) and starts listening.
    /// Throws ``ServerError`` for TLS files that cannot be used, a data directory in use, a port
    /// that cannot be bound.
    public static func start(configuration: ServerConfiguration, logger: Logger) async throws -> APIKeysServer {
        let tls = try configuration.tls.map { try ServerTLS(files: $0) }
        try DataDirectory.prepare(configuration.dataDirectory)
        let (service, directoryLock) = try await openStore(configuration, logger: logger)
        do {
            try await DataDirectory.bootstrapAdminToken(
                service: service, path: configuration.adminTokenPath, logger: logger)
            try await service.prepareToServe()
        } catch {
            await service.close(timeout: .seconds(configuration.shutdownTimeoutSeconds))
            directoryLock?.release()
            throw error
        }
        logger.info(
            "key store open",
            metadata: [
                "database": "\(configuration.databaseDescription)", "keys": "\(service.index.count)",
            ])

        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.eventLoopThreads))
        let state = ServerState(maxConnections: configuration.maxConnections)
        var readResumers: [ObjectIdentifier: ReadResumer] = [:]
        for loop in group.makeIterator() {
            readResumers[ObjectIdentifier(loop)] = ReadResumer(eventLoop: loop) { service.auditIsBacklogged }
        }
        let adminGate = AdminGate(service: service, logger: logger)
        let shared = ConnectionHandler.Shared(
            service: service, adminRoutes: KeyAdmin.router(for: adminGate.dispatcher), adminGate: adminGate,
            publicRoutes: Authorize.router(for: PublicDispatcher(service: service)), state: state,
            maxFrameSize: configuration.maxFrameSize, maxAdminCallsInFlight: configuration.maxAdminCallsInFlight,
            idleTimeout: configuration.idleTimeoutSeconds > 0 ? .seconds(configuration.idleTimeoutSeconds) : nil,
            frameTimeout: .seconds(max(1, configuration.frameTimeoutSeconds)),
            readResumers: readResumers, replyFlushers: ReplyFlushers(group: group),
            metrics: configuration.metricsFactory.map {
                ServerMetrics(factory: $0, eventLoops: Array(group.makeIterator()))
            },
            logger: logger)
        let maxConnections = configuration.maxConnections

        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // One read of at most 4 KiB (~70 Checks) per turn of the event loop (ReadLimits).
            .childChannelOption(.maxMessagesPerRead, value: ReadLimits.maxMessagesPerRead)
            .childChannelOption(.recvAllocator, value: ReadLimits.allocator)
            .childChannelOption(
                .writeBufferWaterMark,
                value: .init(low: configuration.maxQueuedReplyBytes / 2, high: configuration.maxQueuedReplyBytes)
            )
            .childChannelInitializer { channel in
                guard let activity = state.admit(channel) else {
                    logger.warning(
                        "refusing connection: limit reached, every connection busy",
                        metadata: ["limit": "\(maxConnections)"])
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    let peer = channel.remoteAddress.map { "\($0)" } ?? "unknown"
                    if let tls {
                        try channel.pipeline.syncOperations.addHandlers(
                            NIOSSLServerHandler(context: tls.context),
                            TLSHandshakeDeadline(timeout: shared.frameTimeout))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        ConnectionHandler(
                            shared: shared, remoteAddress: peer, peerAddress: channel.remoteAddress?.ipAddress ?? "",
                            activity: activity))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(host: configuration.host, port: configuration.port).get()
        } catch {
            try? await group.shutdownGracefully()
            await service.close(timeout: .seconds(configuration.shutdownTimeoutSeconds))
            directoryLock?.release()
            let reason = (error as? IOError).map { String(cString: strerror($0.errnoCode)) } ?? "\(error)"
            throw ServerError.cannotListen(host: configuration.host, port: configuration.port, reason: reason)
        }
        let port = channel.localAddress?.port ?? configuration.port
        logger.info(
            "apikeyd listening",
            metadata: [
                "host": "\(configuration.host)", "port": "\(port)",
                "tls": "\(tls == nil ? "off" : tls?.files.clientCA == nil ? "on" : "mutual")",
            ])
        return APIKeysServer(
            configuration: configuration, service: service, port: port, group: group,
            serverChannel: channel, state: state, directoryLock: directoryLock, tls: tls, metrics: shared.metrics,
            adminGate: adminGate, logger: logger)
    }

    /// Opens the store the configuration names: PostgreSQL (shared by replicas) or SQLite in the
    /// data directory, which this server then locks for itself.
    private static func openStore(_ configuration: ServerConfiguration, logger: Logger) async throws
        -> (KeyService, DataDirectoryLock?)
    {
        guard configuration.databaseURL == nil else {
            return (try await openKeyService(configuration, logger: logger), nil)
        }
        let directoryLock = try DataDirectoryLock(directory: configuration.dataDirectory)
        do {
            return (try await openKeyService(configuration, logger: logger), directoryLock)
        } catch {
            directoryLock.release()
            throw error
        }
    }

    /// The key service on the store `configuration` names (``ServerConfiguration/databaseURL``,
    /// else SQLite in the data directory), without serving it: for tools beside a running server
    /// (`apikeyd admin-token`). Throws ``StoreError``.
    public static func openKeyService(_ configuration: ServerConfiguration, logger: Logger) async throws -> KeyService {
        let format = try SecretFormat(prefix: configuration.keyPrefix)
        let maxKeyLifetimeMS =
            configuration.maxKeyLifetimeSeconds > 0 ? configuration.maxKeyLifetimeSeconds * 1000 : nil
        if let url = configuration.databaseURL {
            var location = try PostgresLocation(url: url)
            location.requireSynchronousStandby = configuration.requireSynchronousStandby
            let store = try await PostgresKeyStore.open(
                location: location, catalog: configuration.catalog, clock: configuration.clock,
                auditMode: configuration.auditMode, auditQueueCapacity: configuration.auditQueueCapacity,
                auditRetentionMS: configuration.auditRetentionSeconds * 1000,
                historyRetentionMS: configuration.adminAuditRetentionSeconds * 1000,
                maxStalenessMS: configuration.maxStalenessMS, decorateAuditSink: configuration.decorateAuditSink,
                logger: logger)
            return KeyService(
                store: store, format: format, clock: configuration.clock, maxKeyLifetimeMS: maxKeyLifetimeMS,
                logger: logger)
        }
        let store = try SQLiteKeyStore.open(
            path: configuration.databasePath, catalog: configuration.catalog, clock: configuration.clock,
            auditMode: configuration.auditMode, auditQueueCapacity: configuration.auditQueueCapacity,
            auditRetentionMS: configuration.auditRetentionSeconds * 1000,
            historyRetentionMS: configuration.adminAuditRetentionSeconds * 1000, busyTimeoutMS: 5000,
            minFreeDiskBytes: configuration.minFreeDiskBytes, decorateAuditSink: configuration.decorateAuditSink,
            logger: logger)
        return KeyService(
            store: store, format: format, clock: configuration.clock, maxKeyLifetimeMS: maxKeyLifetimeMS,
            logger: logger)
    }

    /// Brings the schema of the configured store up to date without serving (`apikeyd migrate`;
    /// every start does the same). Returns what it did, in words.
    public static func migrate(_ configuration: ServerConfiguration, logger: Logger) async throws -> String {
        if let url = configuration.databaseURL {
            let location = try PostgresLocation(url: url)
            let applied = try await PostgresKeyStore.migrate(
                location: location, clock: configuration.clock, logger: logger)
            return applied.isEmpty
                ? "\(location): schema up to date"
                : "\(location): applied migrations \(applied.map(String.init).joined(separator: ", "))"
        }
        try DataDirectory.prepare(configuration.dataDirectory)
        let service = try KeyService.open(path: configuration.databasePath, logger: logger)
        await service.close(timeout: .seconds(10))
        return "\(configuration.databasePath): schema up to date"
    }

    /// Why the server should not get traffic now (for a readiness probe), or nil when it is ready:
    /// shutting down, an audit writer that does not keep up (checks would soon fail closed), or a
    /// replica past its staleness bound.
    public var readinessProblem: String? {
        if state.isShuttingDown { return "shutting down" }
        return service.freshnessProblem ?? service.auditWriterProblem()
    }

    /// On PostgreSQL, why checks fail closed now (a replica past its staleness bound), else nil.
    public var freshnessProblem: String? { service.freshnessProblem }

    /// Decides a check as RPC Check does (``KeyService/check(secret:permissions:resource:clientAddress:memo:)``,
    /// its audit event included; `memo`: the connection's previous secret and its hash) and counts
    /// it in ``metrics``: for the other ways in, such as forward-auth over HTTP.
    public func check(
        secret: String, permissions: [String], resource: String, clientAddress: String,
        memo: PresentedSecretMemo? = nil
    ) throws -> CheckOutcome {
        try check(
            secret: secret, permissions: permissions, resource: resource, clientAddress: clientAddress, memo: memo,
            tally: nil)
    }

    /// ``check(secret:permissions:resource:clientAddress:memo:)`` on an event loop, counted in
    /// the loop's `tally` (``ServerMetrics/tally(for:)``; nil: from any thread, under a lock).
    package func check(
        secret: String, permissions: [String], resource: String, clientAddress: String,
        memo: PresentedSecretMemo?, tally: CheckTally?
    ) throws -> CheckOutcome {
        try measured(in: tally) {
            try service.check(
                secret: secret, permissions: permissions, resource: resource, clientAddress: clientAddress, memo: memo)
        }
    }

    /// Records a forward-auth request refused before any decision (``KeyService/recordInvalidRequest(secret:resource:clientAddress:why:)``),
    /// counted with the checks in the metrics (reason `invalid_request`).
    public func recordInvalidRequest(secret: String, resource: String, clientAddress: String, why: String) throws
        -> CheckOutcome
    {
        try recordInvalidRequest(secret: secret, resource: resource, clientAddress: clientAddress, why: why, tally: nil)
    }

    /// ``recordInvalidRequest(secret:resource:clientAddress:why:)`` on an event loop, counted in
    /// the loop's `tally` (nil: from any thread, under a lock).
    package func recordInvalidRequest(
        secret: String, resource: String, clientAddress: String, why: String, tally: CheckTally?
    ) throws -> CheckOutcome {
        try measured(in: tally) {
            try service.recordInvalidRequest(secret: secret, resource: resource, clientAddress: clientAddress, why: why)
        }
    }

    /// `answer` counted in the metrics: in `tally`, or else under the lock of checks made anywhere.
    private func measured(in tally: CheckTally?, _ answer: () throws -> CheckOutcome) rethrows -> CheckOutcome {
        guard let tally else { return try ServerMetrics.measuredElsewhere(metrics, answer) }
        return try ServerMetrics.measured(tally, answer)
    }

    /// How a failed call is told to its client, on any port: the status and a message without
    /// internals (``RPCError``, the one mapping). A failure of the server itself is logged here
    /// with the reference its message names, as the RPC port does.
    public func failure(of error: any Error, during what: String) -> (code: StatusCode, message: String) {
        let failure = RPCError(error)
        failure.logIfServerFailure(to: logger, method: what)
        return (failure.code, failure.message)
    }

    /// Brings the gauges of ``metrics`` up to date; the metrics endpoint calls it before each scrape.
    public func refreshMetrics() {
        metrics?.refresh(service: service, openConnections: state.openConnections)
    }

    /// Re-reads the TLS certificate, key and client CA (on SIGHUP): connections accepted from now
    /// on use them; open connections keep theirs. When a file cannot be used the server keeps its
    /// current ones, logs why and throws ``ServerError``. Does nothing without TLS.
    public func reloadTLS() throws {
        guard let tls else { return }
        do {
            try tls.reload()
            logger.notice("TLS certificate reloaded", metadata: ["certificate": "\(tls.files.certificate)"])
        } catch {
            logger.error("TLS reload failed; keeping the current certificate", metadata: ["error": "\(error)"])
            throw error
        }
    }

    /// Serves until a graceful shutdown is requested (SIGTERM/SIGINT through a `ServiceGroup`) or
    /// the task is cancelled, then shuts down. Throws ``ServerError/auditEventsLost(_:)`` when
    /// the shutdown could not write every audit event.
    public func run() async throws {
        try? await gracefulShutdown()
        let report = await shutdown()
        if report.unwrittenAuditEvents > 0 { throw ServerError.auditEventsLost(report.unwrittenAuditEvents) }
    }

    /// What a shutdown could not finish.
    public struct ShutdownReport: Sendable, Hashable {
        /// Audit events the disk kept refusing until the shutdown timeout passed.
        public var unwrittenAuditEvents: Int
    }

    /// Stops accepting, lets KeyAdmin calls in flight finish, closes every connection, writes the
    /// queued audit events and closes the database, all within the configuration's shutdown
    /// timeout. Idempotent: a second call returns at once with nothing lost.
    @discardableResult
    public func shutdown() async -> ShutdownReport {
        guard state.beginShutdown() else { return ShutdownReport(unwrittenAuditEvents: 0) }
        let deadline = ContinuousClock.now + .seconds(max(1, configuration.shutdownTimeoutSeconds))
        logger.info("shutting down: no new connections")
        try? await serverChannel.close()
        let open = state.startDraining()
        while state.adminCallsInFlight > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        for channel in open { try? await channel.close() }
        try? await group.shutdownGracefully()
        // The audit writer gets what is left of the timeout, and at least a moment.
        let unwritten = await service.close(timeout: max(deadline - ContinuousClock.now, .milliseconds(500)))
        directoryLock?.release()
        if unwritten > 0 {
            logger.error(
                "shut down: audit events could not be written before the shutdown timeout",
                metadata: [
                    "unwrittenEvents": "\(unwritten)", "shutdownTimeout": "\(configuration.shutdownTimeoutSeconds) s",
                ])
        } else {
            logger.info("shut down: audit trail flushed, database closed")
        }
        return ShutdownReport(unwrittenAuditEvents: unwritten)
    }
}
