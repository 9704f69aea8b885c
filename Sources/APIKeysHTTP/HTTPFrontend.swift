import APIKeysServer
import Foundation
import Logging
import Metrics
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

/// The HTTP port: `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus text format),
/// forward-auth at `/authorize` (any method, any sub-path) and `POST /leaked-keys` (leak reports
/// from secret scanners, see ``HTTPResponder/reportLeaks(_:peer:)``).
///
/// Served by a channel handler behind NIO's HTTP/1.1 request decoder, answering on the event
/// loop as the RPC port does (no task per request), its responses serialized into one buffer per
/// read burst (``HTTPConnectionHandler``): measured against Hummingbird and against NIO's full
/// HTTP server pipeline on this path, see docs/PERFORMANCE.md.
///
/// ```swift
/// let metrics = HTTPFrontend.makeMetrics()
/// configuration.metricsFactory = metrics.factory
/// let server = try await APIKeysServer.start(configuration: configuration, logger: logger)
/// let http = try await HTTPFrontend.start(server: server, metrics: metrics, host: "127.0.0.1", port: 7412)
/// try await ServiceGroup(services: [server, http], …).run()
/// ```
public final class HTTPFrontend: Service, Sendable {
    /// The Prometheus registry the server's metrics go to, and the factory that feeds it.
    public struct Metrics: Sendable {
        public let registry: PrometheusCollectorRegistry
        public let factory: PrometheusMetricsFactory
    }

    /// The port the HTTP server listens on (the chosen one when asked for 0).
    public let port: Int
    /// The port's own event loops, as many as the RPC port's (``ServerConfiguration/eventLoopThreads``),
    /// shut down by ``stop()``.
    private let group: MultiThreadedEventLoopGroup
    /// Taken by the first ``stop()``.
    private let quiescing: Mutex<ServerQuiescingHelper?>
    private let serverChannel: any Channel
    private let connections: OpenConnections
    private let offLoop: OffLoopTasks
    private let logger: Logger

    private init(
        port: Int, group: MultiThreadedEventLoopGroup, quiescing: ServerQuiescingHelper, serverChannel: any Channel,
        connections: OpenConnections, offLoop: OffLoopTasks, logger: Logger
    ) {
        self.port = port
        self.offLoop = offLoop
        self.logger = logger
        self.group = group
        self.quiescing = Mutex(quiescing)
        self.serverChannel = serverChannel
        self.connections = connections
    }

    /// Connections the port holds now (at most its `maxConnections`), and how many of them are
    /// in the middle of a request (tests).
    var openConnections: (all: Int, busy: Int) { connections.counts }

    /// A registry for ``ServerConfiguration/metricsFactory`` (the check-latency histogram, 25 µs
    /// to 1 s, is written by ``ServerMetrics`` itself).
    public static func makeMetrics() -> Metrics {
        let registry = PrometheusCollectorRegistry()
        return Metrics(registry: registry, factory: PrometheusMetricsFactory(registry: registry))
    }

    /// Connections served at once unless told otherwise.
    public static let defaultMaxConnections = 1024

    /// Starts serving `server` on `host:port` and returns once listening. `metrics` is the
    /// registry given to the server (nil: `/metrics` answers 404); `forwardAuth` how
    /// `/authorize` decides and where client addresses come from. A connection without a
    /// complete request for `idleTimeout` is closed (the default is longer than nginx's upstream
    /// `keepalive_timeout`, 60 s, so that nginx closes first); at `maxConnections` open ones, a new
    /// connection takes the slot of an incomplete or idle one (``OpenConnections``), or is closed
    /// as soon as it is accepted when every one is being answered. Throws ``HTTPFrontendError``
    /// when it cannot listen.
    public static func start(
        server: APIKeysServer, metrics: Metrics?, forwardAuth: ForwardAuthOptions = .init(), host: String, port: Int,
        idleTimeout: Duration = .seconds(75), maxConnections: Int = defaultMaxConnections, logger: Logger
    ) async throws -> HTTPFrontend {
        let idleTimeout = TimeAmount(idleTimeout)
        let ignored = metrics.map {
            Counter(label: "apikeyd_forwarding_headers_ignored_total", factory: $0.factory)
        }
        let refused = metrics.map {
            Counter(label: "apikeyd_http_connections_refused_total", factory: $0.factory)
        }
        let responder = HTTPResponder(
            server: server, metrics: metrics, forwardAuth: forwardAuth, ignoredForwardingHeaders: ignored)
        let open = OpenConnections(limit: maxConnections)
        let offLoop = OffLoopTasks()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, server.configuration.eventLoopThreads))
        // Forward-auth's checks are counted on their own loop, as the RPC port's are.
        server.metrics?.countChecks(onLoopsOf: group)
        let channel: any Channel
        let quiescing: ServerQuiescingHelper
        do {
            // Made in this block: when binding fails, the helper (which fails a promise of the
            // loops as it goes) is gone before the loops are shut down.
            let helper = ServerQuiescingHelper(group: group)
            let replyFlushers = ReplyFlushers(group: group)
            let bootstrap = ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            helper.makeServerChannelHandler(channel: channel))
                    }
                }
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                // As on the RPC port: one read of at most 4 KiB per turn of the event loop (ReadLimits).
                .childChannelOption(.maxMessagesPerRead, value: ReadLimits.maxMessagesPerRead)
                .childChannelOption(.recvAllocator, value: ReadLimits.allocator)
                .childChannelInitializer { channel in
                    guard let activity = open.admit(channel) else {
                        refused?.increment()
                        return channel.close()
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        let pipeline = channel.pipeline.syncOperations
                        try pipeline.addHandler(ActivityMarker(activity))
                        try pipeline.addHandlers(
                            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)),
                            HTTPConnectionHandler(
                                responder: responder, peer: channel.remoteAddress?.ipAddress ?? "",
                                idleTimeout: idleTimeout, offLoop: offLoop, activity: activity,
                                replyFlusher: replyFlushers.flusher(for: channel.eventLoop),
                                checkTally: server.metrics?.tally(for: channel.eventLoop)))
                    }
                }
            channel = try await bootstrap.bind(host: host, port: port).get()
            quiescing = helper
        } catch {
            try? await group.shutdownGracefully()
            let reason = (error as? IOError).map { String(cString: strerror($0.errnoCode)) } ?? "\(error)"
            throw HTTPFrontendError.cannotListen(reason: reason)
        }
        let boundPort = channel.localAddress?.port ?? port
        logger.info("HTTP port listening", metadata: ["host": "\(host)", "port": "\(boundPort)"])
        return HTTPFrontend(
            port: boundPort, group: group, quiescing: quiescing, serverChannel: channel, connections: open,
            offLoop: offLoop, logger: logger)
    }

    /// Serves until the service group shuts down, then stops the HTTP server.
    public func run() async throws {
        try? await gracefulShutdown()
        await stop()
    }

    /// Stops the HTTP server: no new connections; idle ones are closed, a request being answered
    /// is answered first. Returns when every connection is closed, or after 5 s (those left are
    /// then closed with the port's event loops, once no leak report is being stored: it would
    /// come back to them). A second call returns at once.
    public func stop() async { await stop(quiesceTimeout: .seconds(5)) }

    /// ``stop()`` with another quiesce time than 5 s (tests).
    func stop(quiesceTimeout: TimeAmount) async {
        guard let quiescing = quiescing.withLock({ $0.take() }) else { return }
        await Self.quiesce(consume quiescing, serverChannel: serverChannel, timeout: quiesceTimeout)
        guard await offLoop.finished(within: Self.offLoopGrace) else {
            logger.warning(
                "HTTP port stopped with leak reports still being stored; its event loops are left running",
                metadata: ["waited": "\(Self.offLoopGrace)"])
            return
        }
        // Only now: the helper, gone with `quiesce`, failed a promise of these loops as it went.
        try? await group.shutdownGracefully()
    }

    /// How long ``stop()`` waits for leak reports being stored (each secret's store write has
    /// a deadline of its own).
    static let offLoopGrace: Duration = .seconds(30)

    /// Closes the listening channel and every idle connection, and waits until every connection
    /// is closed, or `timeout`.
    private static func quiesce(
        _ quiescing: consuming ServerQuiescingHelper, serverChannel: any Channel, timeout: TimeAmount
    ) async {
        let eventLoop = serverChannel.eventLoop
        let stopped = eventLoop.makePromise(of: Void.self)
        quiescing.initiateShutdown(promise: stopped)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumed = Mutex(false)
            let resume = { @Sendable in
                let first = resumed.withLock { done in
                    defer { done = true }
                    return !done
                }
                if first { continuation.resume() }
            }
            let timer = eventLoop.scheduleTask(in: timeout) { resume() }
            stopped.futureResult.whenComplete { _ in
                timer.cancel()
                resume()
            }
        }
    }
}

/// Why the HTTP port could not start.
public enum HTTPFrontendError: Error, CustomStringConvertible {
    case cannotListen(reason: String)

    public var description: String {
        switch self {
        case .cannotListen(let reason): "cannot listen: \(reason)"
        }
    }
}
