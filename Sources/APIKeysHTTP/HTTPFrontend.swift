import APIKeysServer
import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

/// The HTTP port: `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus text format) and
/// forward-auth at `/authorize` (any method, any sub-path).
///
/// Served by a channel handler on NIO's HTTP/1.1 pipeline, answering on the event loop as the
/// RPC port does (no task per request): measured against Hummingbird on this path, see
/// docs/PERFORMANCE.md.
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
    private let quiescing: ServerQuiescingHelper
    private let serverChannel: any Channel

    private init(port: Int, quiescing: ServerQuiescingHelper, serverChannel: any Channel) {
        self.port = port
        self.quiescing = quiescing
        self.serverChannel = serverChannel
    }

    /// A registry for ``ServerConfiguration/metricsFactory`` (the check-latency histogram, 25 µs
    /// to 1 s, is written by ``ServerMetrics`` itself).
    public static func makeMetrics() -> Metrics {
        let registry = PrometheusCollectorRegistry()
        return Metrics(registry: registry, factory: PrometheusMetricsFactory(registry: registry))
    }

    /// Starts serving `server` on `host:port` and returns once listening. `metrics` is the
    /// registry given to the server (nil: `/metrics` answers 404); `routes` the forward-auth
    /// route table. A connection without a complete request for `idleTimeout` is closed (the
    /// default is longer than nginx's upstream `keepalive_timeout`, 60 s, so that nginx closes
    /// first). Throws ``HTTPFrontendError`` when it cannot listen.
    public static func start(
        server: APIKeysServer, metrics: Metrics?, routes: RouteTable? = nil, host: String, port: Int,
        idleTimeout: Duration = .seconds(75), logger: Logger
    ) async throws -> HTTPFrontend {
        let idleTimeout = TimeAmount(idleTimeout)
        let responder = HTTPResponder(server: server, metrics: metrics, forwardAuth: ForwardAuth(server: server, routes: routes))
        let group = MultiThreadedEventLoopGroup.singleton
        let quiescing = ServerQuiescingHelper(group: group)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                    try pipeline.addHandlers(
                        HTTP1ToHTTPServerCodec(secure: false),
                        HTTPConnectionHandler(
                            responder: responder, peer: channel.remoteAddress?.ipAddress ?? "", idleTimeout: idleTimeout))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(host: host, port: port).get()
        } catch let error as IOError {
            throw HTTPFrontendError.cannotListen(reason: String(cString: strerror(error.errnoCode)))
        } catch {
            throw HTTPFrontendError.cannotListen(reason: "\(error)")
        }
        let boundPort = channel.localAddress?.port ?? port
        logger.info("HTTP port listening", metadata: ["host": "\(host)", "port": "\(boundPort)"])
        return HTTPFrontend(port: boundPort, quiescing: quiescing, serverChannel: channel)
    }

    /// Serves until the service group shuts down, then stops the HTTP server.
    public func run() async throws {
        try? await gracefulShutdown()
        await stop()
    }

    /// Stops the HTTP server: no new connections; idle ones are closed, a request being answered
    /// is answered first. Returns when every connection is closed, or after 5 s (a request whose
    /// end never comes is then closed by its idle timeout).
    public func stop() async {
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
            stopped.futureResult.whenComplete { _ in resume() }
            eventLoop.scheduleTask(in: .seconds(5)) { resume() }
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

/// The answers of the HTTP port, shared by every connection.
struct HTTPResponder: Sendable {
    let server: APIKeysServer
    let metrics: HTTPFrontend.Metrics?
    let forwardAuth: ForwardAuth

    struct Answer {
        var status: HTTPResponse.Status
        var headers = HTTPFields()
        var body: ByteBuffer
    }

    /// The answer to `request` from `peer`.
    func answer(_ request: HTTPRequest, peer: String) -> Answer {
        let target = request.path ?? "/"
        let path = target.firstIndex(of: "?").map { String(target[..<$0]) } ?? target
        if path == ForwardAuth.pathPrefix || path.hasPrefix(ForwardAuth.pathPrefix + "/") {
            let decision = forwardAuth.authorize(method: request.method, path: path, headers: request.headerFields, peer: peer)
            return Answer(status: decision.status, headers: decision.headers, body: ByteBuffer(string: decision.body))
        }
        switch path {
        case "/healthz":
            return getOnly(request) { Self.text(.ok, "ok\n") }
        case "/readyz":
            return getOnly(request) {
                if let problem = server.readinessProblem { return Self.text(.serviceUnavailable, "not ready: \(problem)\n") }
                return Self.text(.ok, "ready\n")
            }
        case "/metrics" where metrics != nil:
            return getOnly(request) {
                server.refreshMetrics()
                var bytes: [UInt8] = []
                metrics?.registry.emit(into: &bytes)
                bytes += (server.metrics?.checkDurationExposition() ?? "").utf8
                var headers = HTTPFields()
                headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
                return Answer(status: .ok, headers: headers, body: ByteBuffer(bytes: bytes))
            }
        default:
            return Self.text(.notFound, "not found\n")
        }
    }

    private func getOnly(_ request: HTTPRequest, _ answer: () -> Answer) -> Answer {
        guard request.method == .get else {
            var refused = Self.text(.methodNotAllowed, "method not allowed\n")
            refused.headers[.allow] = "GET"
            return refused
        }
        return answer()
    }

    private static func text(_ status: HTTPResponse.Status, _ text: String) -> Answer {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        return Answer(status: status, headers: headers, body: ByteBuffer(string: text))
    }
}

/// One HTTP connection: each request is answered on the event loop when its end arrives (a body
/// is read and dropped). A connection with no complete request for `idleTimeout` (since it
/// opened or since its last answer) is closed, however slowly its bytes trickle in.
final class HTTPConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    private let responder: HTTPResponder
    private let peer: String
    private let idleTimeout: TimeAmount
    private var request: HTTPRequest?
    private var idle: Scheduled<Void>?

    init(responder: HTTPResponder, peer: String, idleTimeout: TimeAmount) {
        self.responder = responder
        self.peer = peer
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) { armIdleTimer(context: context) }

    func handlerRemoved(context: ChannelHandlerContext) { idle?.cancel() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break
        case .end:
            guard let request else { return }
            self.request = nil
            respond(to: request, context: context)
        }
    }

    private func respond(to request: HTTPRequest, context: ChannelHandlerContext) {
        var answer = responder.answer(request, peer: peer)
        answer.headers[.contentLength] = "\(answer.body.readableBytes)"
        let close = request.headerFields[.connection]?.lowercased().contains("close") == true
        if close { answer.headers[.connection] = "close" }
        context.write(wrapOutboundOut(.head(HTTPResponse(status: answer.status, headerFields: answer.headers))), promise: nil)
        if answer.body.readableBytes > 0 { context.write(wrapOutboundOut(.body(answer.body)), promise: nil) }
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if close {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
        }
        armIdleTimer(context: context)
    }

    private func armIdleTimer(context: ChannelHandlerContext) {
        idle?.cancel()
        let channel = context.channel
        idle = context.eventLoop.scheduleTask(in: idleTimeout) { channel.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
