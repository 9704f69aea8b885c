import APIKeysServer
import Foundation
import HTTPTypes
import Logging
import Metrics
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

/// The HTTP port: `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus text format),
/// forward-auth at `/authorize` (any method, any sub-path) and `POST /leaked-keys` (leak reports
/// from secret scanners, see ``HTTPResponder/reportLeaks(_:peer:)``).
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

    /// Connections served at once unless told otherwise.
    public static let defaultMaxConnections = 1024

    /// Starts serving `server` on `host:port` and returns once listening. `metrics` is the
    /// registry given to the server (nil: `/metrics` answers 404); `forwardAuth` how
    /// `/authorize` decides and where client addresses come from. A connection without a
    /// complete request for `idleTimeout` is closed (the default is longer than nginx's upstream
    /// `keepalive_timeout`, 60 s, so that nginx closes first); past `maxConnections` open ones, a
    /// new connection is closed as soon as it is accepted. Throws ``HTTPFrontendError`` when it
    /// cannot listen.
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
            server: server, metrics: metrics, clientAddress: forwardAuth.clientAddress,
            forwardAuth: ForwardAuth(server: server, options: forwardAuth, ignoredForwardingHeaders: ignored))
        let open = OpenConnections(limit: maxConnections)
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
                guard let activity = open.admit(channel) else {
                    refused?.increment()
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(ActivityMarker(activity))
                    try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                    try pipeline.addHandlers(
                        HTTP1ToHTTPServerCodec(secure: false),
                        HTTPConnectionHandler(
                            responder: responder, peer: channel.remoteAddress?.ipAddress ?? "",
                            idleTimeout: idleTimeout, activity: activity))
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

/// The HTTP port's open connections, at most `limit`. Past the limit a new connection takes the
/// slot of the oldest idle one (nothing received since it opened or since its last answer), which
/// is closed: a flood of silent connections cannot keep a probe or a proxy out. When every
/// connection is in the middle of a request, the new one is closed instead.
final class OpenConnections: Sendable {
    /// Whether a connection has bytes it has not been answered for (set by ``ActivityMarker``,
    /// cleared by each answer).
    final class Activity: Sendable {
        let busy = Atomic<Bool>(false)
    }

    private struct Entry {
        let channel: any Channel
        let activity: Activity
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        /// Admission order, oldest first; ids of closed connections are dropped lazily.
        var order: [ObjectIdentifier] = []
        var head = 0
    }

    private let state = Mutex(State())
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Connections held now.
    var count: Int { state.withLock { $0.entries.count } }

    /// Counts `channel` until it closes, closing the oldest idle connection to make room when at
    /// the limit; nil (not counted) when none is idle.
    func admit(_ channel: any Channel) -> Activity? {
        let id = ObjectIdentifier(channel)
        let activity = Activity()
        let evicted: (any Channel)? = state.withLock { state in
            var evicted: (any Channel)?
            if state.entries.count >= limit {
                guard let victim = Self.oldestIdle(&state) else { return nil }
                evicted = state.entries.removeValue(forKey: victim)?.channel
            }
            state.entries[id] = Entry(channel: channel, activity: activity)
            state.order.append(id)
            return evicted ?? channel
        }
        guard let evicted else { return nil }
        if evicted !== channel { evicted.close(promise: nil) }
        channel.closeFuture.whenComplete { [self] _ in
            state.withLock { state in
                state.entries.removeValue(forKey: id)
                // Keep the order list from outgrowing the entries.
                if state.order.count - state.head > 2 * state.entries.count + 64 {
                    state.order = state.order[state.head...].filter { state.entries[$0] != nil }
                    state.head = 0
                }
            }
        }
        return activity
    }

    /// The oldest connection with nothing unanswered, skipping (and forgetting) closed ones.
    private static func oldestIdle(_ state: inout State) -> ObjectIdentifier? {
        var index = state.head
        while index < state.order.count {
            let id = state.order[index]
            guard let entry = state.entries[id] else {
                if index == state.head { state.head += 1 }
                index += 1
                continue
            }
            if !entry.activity.busy.load(ordering: .relaxed) { return id }
            index += 1
        }
        return nil
    }
}

/// First in an HTTP connection's pipeline: marks the connection busy when bytes arrive, so that
/// it is not taken for idle (``OpenConnections``) until they are answered.
final class ActivityMarker: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let activity: OpenConnections.Activity

    init(_ activity: OpenConnections.Activity) { self.activity = activity }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        activity.busy.store(true, ordering: .relaxed)
        context.fireChannelRead(data)
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
    /// Where a leak reporter's address comes from (the same rule as forward-auth's).
    let clientAddress: ClientAddressPolicy
    let forwardAuth: ForwardAuth

    struct Answer {
        var status: HTTPResponse.Status
        var headers = HTTPFields()
        var body: ByteBuffer
    }

    /// The answer to `request` from `peer`.
    func answer(_ request: HTTPRequest, peer: String) -> Answer {
        let path = Self.path(of: request)
        if path == ForwardAuth.pathPrefix || path.hasPrefix(ForwardAuth.pathPrefix + "/") {
            let decision = forwardAuth.authorize(
                method: request.method, path: path, headers: request.headerFields, peer: peer)
            return Answer(status: decision.status, headers: decision.headers, body: ByteBuffer(string: decision.body))
        }
        switch path {
        case "/healthz":
            return getOnly(request) { Self.text(.ok, "ok\n") }
        case "/readyz":
            return getOnly(request) {
                if let problem = server.readinessProblem {
                    return Self.text(.serviceUnavailable, "not ready: \(problem)\n")
                }
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
        case Self.leakPath:  // a POST is read by reportLeaks instead
            var refused = Self.text(.methodNotAllowed, "method not allowed\n")
            refused.headers[.allow] = "POST"
            return refused
        default:
            return Self.text(.notFound, "not found\n")
        }
    }

    /// Where secret scanners post the secrets they found (no admin token: holding one is the proof).
    static let leakPath = "/leaked-keys"
    /// The largest leak report body read, and the most secrets one report may carry.
    static let maxLeakBodyBytes = 64 * 1024
    static let maxLeaksPerReport = 100

    /// Whether `request` is a leak report, whose body is read and answered off the event loop
    /// (``reportLeaks(_:peer:)``) instead of by ``answer(_:peer:)``.
    func isLeakReport(_ request: HTTPRequest) -> Bool {
        request.method == .post && Self.path(of: request) == Self.leakPath
    }

    /// The request's path without its query.
    private static func path(of request: HTTPRequest) -> String {
        let target = request.path ?? "/"
        return target.firstIndex(of: "?").map { String(target[..<$0]) } ?? target
    }

    /// Reports every secret of `body` as leaked (``KeyService/reportLeakedKey(secret:source:reporterAddress:deadline:)``)
    /// from `peer`: a JSON array of objects with `token` and optionally `url` or `source` (the
    /// format GitHub's secret scanning posts), or plain text, one secret a line. The answer
    /// (`[]`, or `reported N` for text) is the same whatever the secrets were.
    func reportLeaks(_ body: ByteBuffer, peer: String) async -> Answer {
        struct Found: Decodable {
            let token: String
            let url: String?
            let source: String?
        }
        let bytes = Data(body.readableBytesView)
        let isJSON = bytes.first(where: { !Character(UnicodeScalar($0)).isWhitespace }) == UInt8(ascii: "[")
        let found: [(secret: String, source: String)]
        if isJSON {
            guard let decoded = try? JSONDecoder().decode([Found].self, from: bytes) else {
                return Self.text(.badRequest, "expected a JSON array of {\"token\": …, \"url\": …}\n")
            }
            found = decoded.map { ($0.token, $0.url ?? $0.source ?? "") }
        } else {
            found = String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline)
                .map { ($0.trimmingCharacters(in: .whitespaces), "") }.filter { !$0.secret.isEmpty }
        }
        guard found.count <= Self.maxLeaksPerReport else {
            return Self.text(.contentTooLarge, "at most \(Self.maxLeaksPerReport) secrets a report\n")
        }
        for (secret, source) in found {
            do {
                try await server.service.reportLeakedKey(
                    secret: secret, source: source, reporterAddress: peer, deadline: .after(milliseconds: 10_000))
            } catch {
                // Not acted on: the scanner should send it again.
                let failure = server.failure(of: error, during: "leak report")
                return Self.text(
                    HTTPFailure.status(failure.code),
                    "the report could not be recorded (\(failure.message)); send it again\n")
            }
        }
        if isJSON {
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Answer(status: .ok, headers: headers, body: ByteBuffer(string: "[]"))
        }
        return Self.text(.ok, "reported \(found.count)\n")
    }

    private func getOnly(_ request: HTTPRequest, _ answer: () -> Answer) -> Answer {
        guard request.method == .get else {
            var refused = Self.text(.methodNotAllowed, "method not allowed\n")
            refused.headers[.allow] = "GET"
            return refused
        }
        return answer()
    }

    static func text(_ status: HTTPResponse.Status, _ text: String) -> Answer {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        return Answer(status: status, headers: headers, body: ByteBuffer(string: text))
    }
}

/// One HTTP connection: each request is answered on the event loop when its end arrives (a body
/// is read and dropped), except a leak report: its body (at most
/// ``HTTPResponder/maxLeakBodyBytes``, else 413) is answered by a task, and the connection closed
/// after the answer (whatever was sent after the report is dropped). A connection with no
/// complete request for `idleTimeout` (since it opened or since its last answer) is closed,
/// however slowly its bytes trickle in.
final class HTTPConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    private let responder: HTTPResponder
    private let peer: String
    private let idleTimeout: TimeAmount
    private var request: HTTPRequest?
    /// The body of the leak report being read.
    private var leakBody: ByteBuffer?
    /// A leak report is being answered, or was refused: nothing more is read on this connection.
    private var finishing = false
    private var idle: Scheduled<Void>?
    /// Busy from the first byte of a request to its answer (``OpenConnections``).
    private let activity: OpenConnections.Activity?

    init(responder: HTTPResponder, peer: String, idleTimeout: TimeAmount, activity: OpenConnections.Activity? = nil) {
        self.responder = responder
        self.peer = peer
        self.idleTimeout = idleTimeout
        self.activity = activity
    }

    func handlerAdded(context: ChannelHandlerContext) { armIdleTimer(context: context) }

    func handlerRemoved(context: ChannelHandlerContext) { idle?.cancel() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finishing else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
            if responder.isLeakReport(head) { leakBody = ByteBuffer() }
        case .body(let part):
            guard var body = leakBody else { break }
            guard body.readableBytes + part.readableBytes <= HTTPResponder.maxLeakBodyBytes else {
                finishing = true
                let refused = HTTPResponder.text(
                    .contentTooLarge, "a report is at most \(HTTPResponder.maxLeakBodyBytes) bytes\n")
                write(refused, close: true, context: context)
                return
            }
            leakBody = nil  // keep the buffer uniquely referenced while appending
            body.writeImmutableBuffer(part)
            leakBody = body
        case .end:
            guard let request else { return }
            self.request = nil
            if let body = leakBody {
                leakBody = nil
                finishing = true
                answerLeakReport(
                    body, reporter: responder.clientAddress.resolve(peer: peer, headers: request.headerFields).address,
                    context: context)
            } else {
                let close = request.headerFields[.connection]?.lowercased().contains("close") == true
                write(responder.answer(request, peer: peer), close: close, context: context)
            }
        }
    }

    private func answerLeakReport(_ body: ByteBuffer, reporter: String, context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        let (responder, eventLoop) = (responder, context.eventLoop)
        Task {
            let answer = await responder.reportLeaks(body, peer: reporter)
            eventLoop.execute {
                let (handler, context) = loopBound.value
                guard context.channel.isActive else { return }  // the reporter left; the report was acted on
                handler.write(answer, close: true, context: context)
            }
        }
    }

    private func write(_ answer: HTTPResponder.Answer, close: Bool, context: ChannelHandlerContext) {
        var answer = answer
        answer.headers[.contentLength] = "\(answer.body.readableBytes)"
        if close { answer.headers[.connection] = "close" }
        context.write(
            wrapOutboundOut(.head(HTTPResponse(status: answer.status, headerFields: answer.headers))), promise: nil)
        if answer.body.readableBytes > 0 { context.write(wrapOutboundOut(.body(answer.body)), promise: nil) }
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        activity?.busy.store(false, ordering: .relaxed)
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
