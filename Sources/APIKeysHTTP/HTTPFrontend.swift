import APIKeysServer
import Hummingbird
import Logging
import Metrics
import NIOCore
import Prometheus
import ServiceLifecycle

/// The HTTP port (Hummingbird): `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus text
/// format) and forward-auth at `/authorize` (any method, any sub-path).
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
    private let running: Task<Void, any Error>

    private init(port: Int, running: Task<Void, any Error>) {
        self.port = port
        self.running = running
    }

    /// A registry for ``ServerConfiguration/metricsFactory``, with the check-latency buckets of
    /// a service that answers from memory (25 µs to 1 s).
    public static func makeMetrics() -> Metrics {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["apikeyd_check_duration_seconds"] = [
            .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
            .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(50),
            .milliseconds(250), .seconds(1),
        ]
        return Metrics(registry: registry, factory: factory)
    }

    /// Starts serving `server` on `host:port` and returns once listening. `metrics` is the
    /// registry given to the server (nil: `/metrics` answers 404); `routes` the forward-auth
    /// route table.
    public static func start(
        server: APIKeysServer, metrics: Metrics?, routes: RouteTable? = nil, host: String, port: Int, logger: Logger
    ) async throws -> HTTPFrontend {
        let router = Router(context: HTTPContext.self)
        router.get("/healthz") { _, _ in "ok\n" }
        router.get("/readyz") { _, _ -> Response in
            if let problem = server.readinessProblem {
                return Self.text(.serviceUnavailable, "not ready: \(problem)\n")
            }
            return Self.text(.ok, "ready\n")
        }
        if let metrics {
            router.get("/metrics") { _, _ -> Response in
                server.refreshMetrics()
                var buffer: [UInt8] = []
                metrics.registry.emit(into: &buffer)
                var headers = HTTPFields()
                headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
            }
        }
        let forwardAuth = ForwardAuth(server: server, routes: routes)
        let authorize: @Sendable (Request, HTTPContext) async throws -> Response = { request, context in
            let answer = forwardAuth.authorize(
                method: request.method, path: request.uri.path, headers: request.headers, peer: context.peer)
            return Response(
                status: answer.status, headers: answer.headers, body: .init(byteBuffer: ByteBuffer(string: answer.body)))
        }
        for method: HTTPRequest.Method in [.get, .post, .put, .patch, .delete, .head, .options] {
            router.on("\(ForwardAuth.pathPrefix)", method: method, use: authorize)
            router.on("\(ForwardAuth.pathPrefix)/**", method: method, use: authorize)
        }

        let (bound, boundContinuation) = AsyncStream.makeStream(of: Int.self)
        let application = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in
                boundContinuation.yield(channel.localAddress?.port ?? port)
                boundContinuation.finish()
            }, logger: logger)
        let running = Task { try await application.runService(gracefulShutdownSignals: []) }
        var iterator = bound.makeAsyncIterator()
        guard let boundPort = await iterator.next() else {
            // The application ended before listening: its error says why (the port in use, say).
            try await running.value
            throw CancellationError()
        }
        logger.info("HTTP port listening", metadata: ["host": "\(host)", "port": "\(boundPort)"])
        return HTTPFrontend(port: boundPort, running: running)
    }

    /// Serves until the service group shuts down, then stops the HTTP server.
    public func run() async throws {
        try? await gracefulShutdown()
        await stop()
    }

    /// Stops the HTTP server (open connections are closed).
    public func stop() async {
        running.cancel()
        _ = await running.result
    }

    private static func text(_ status: HTTPResponse.Status, _ text: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// Hummingbird's request context, with the peer's address (the client address of a forward-auth
/// check when no `X-Forwarded-For` says otherwise).
struct HTTPContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let peer: String

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        peer = source.channel.remoteAddress?.ipAddress ?? ""
    }
}
