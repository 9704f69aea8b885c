import APIKeysCore
import APIKeysServer
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// The HTTP admin API's port: JSON for every KeyAdmin call and the admin-token calls
/// (``AdminRoutes``, described by docs/openapi.json, served at `/openapi.json`), on Hummingbird.
/// Apart from the forward-auth HTTP port on purpose: proxies reach `/authorize`, people and
/// automation reach this port, and neither exposes the other.
///
/// ```swift
/// let admin = try await AdminAPI.start(server: server, options: .init(host: "127.0.0.1", port: 7413), logger: logger)
/// try await ServiceGroup(services: [server, admin], …).run()
/// ```
public final class AdminAPI: Service, Sendable {
    /// Where and how the port listens.
    public struct Options: Sendable {
        public var host: String
        public var port: Int
        /// Certificate and key (a client CA in it is not used: admin tokens authenticate); nil: plain HTTP.
        public var tls: TLSFiles?
        /// A request must be complete this long after the connection opened or its last answer.
        public var requestTimeout: Duration
        /// Connections held at once; past it, a new one takes the slot of an incomplete or idle
        /// one, or is closed when every one is being answered (``AdminConnectionSlot``).
        public var maxConnections: Int
        /// Requests answered a second, all callers together (bursts of twice as many); past it,
        /// 429 with `Retry-After`. It bounds what the admin port can take from the checks, which
        /// share the machine's cores with it. No one caller (one token, or all callers without a
        /// token seen valid) gets more than half of it (``AdminRequestRate``). 0: no limit.
        public var requestsPerSecond: UInt32

        public init(
            host: String = "127.0.0.1", port: Int, tls: TLSFiles? = nil, requestTimeout: Duration = .seconds(30),
            maxConnections: Int = 256, requestsPerSecond: UInt32 = 100
        ) {
            (self.host, self.port, self.tls) = (host, port, tls)
            (self.requestTimeout, self.maxConnections) = (requestTimeout, maxConnections)
            self.requestsPerSecond = requestsPerSecond
        }
    }

    /// The port it listens on (the chosen one when asked for 0).
    public let port: Int
    /// `https` with TLS, else `http`.
    public let scheme: String
    private let group: ServiceGroup
    private let running: Task<Void, any Error>

    private init(port: Int, scheme: String, group: ServiceGroup, running: Task<Void, any Error>) {
        (self.port, self.scheme, self.group, self.running) = (port, scheme, group, running)
    }

    /// Starts serving `server`'s KeyAdmin over JSON and returns once listening. Throws
    /// ``AdminAPIError`` when the TLS files cannot be used or the port cannot be bound.
    public static func start(
        server: APIKeysServer, options: Options, clock: any WallClock = SystemWallClock(), logger: Logger
    ) async throws -> AdminAPI {
        let router = Router(context: AdminRequestContext.self)
        let scheme = options.tls == nil ? "http" : "https"
        let sessions = ConsoleSessions(secure: options.tls != nil)
        router.add(middleware: ConsoleSessionMiddleware(sessions: sessions, scheme: scheme, clock: clock))
        ConsoleRoutes(server: server, sessions: sessions, scheme: scheme, clock: clock, logger: logger)
            .register(on: router)
        AdminRoutes(server: server, idempotency: IdempotencyCache(), clock: clock, logger: logger)
            .register(on: router)
        let requestTimeout = TimeAmount(options.requestTimeout)
        let connections = OpenConnections(limit: options.maxConnections)
        let http = HTTPServerBuilder.http1(
            configuration: .init(additionalChannelHandlers: [
                AdminConnectionSlot(connections), RequestDeadlineHandler(timeout: requestTimeout),
            ]))
        let builder: HTTPServerBuilder
        if let files = options.tls {
            do {
                var configuration = try ServerTLS.configuration(
                    TLSFiles(certificate: files.certificate, privateKey: files.privateKey))
                configuration.certificateVerification = .none
                builder = try .tls(http, tlsConfiguration: configuration)
            } catch {
                throw AdminAPIError.tls("\(error)")
            }
        } else {
            builder = http
        }
        let (bound, boundContinuation) = AsyncStream.makeStream(of: Int.self)
        let app = Application(
            responder: ProblemResponder(
                inner: router.buildResponder(), methods: PathMethods(openAPI: OpenAPIDocument.json),
                rate: AdminRequestRate(requestsPerSecond: options.requestsPerSecond, server: server, sessions: sessions)
            ),
            server: builder,
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: nil),
            onServerRunning: { channel in
                boundContinuation.yield(channel.localAddress?.port ?? options.port)
                boundContinuation.finish()
            },
            logger: logger)
        let group = ServiceGroup(services: [app], gracefulShutdownSignals: [], logger: logger)
        let running = Task {
            defer { boundContinuation.finish() }
            try await group.run()
        }
        var iterator = bound.makeAsyncIterator()
        guard let port = await iterator.next() else {
            var reason = "the server stopped at start"
            if case .failure(let error) = await running.result { reason = "\(error)" }
            throw AdminAPIError.cannotListen(reason: reason)
        }
        logger.info("admin API listening", metadata: ["url": "\(scheme)://\(options.host):\(port)"])
        return AdminAPI(port: port, scheme: scheme, group: group, running: running)
    }

    /// Serves until the service group shuts down, then stops.
    public func run() async throws {
        try? await gracefulShutdown()
        await stop()
    }

    /// Stops: no new connections; a request being answered is answered first.
    public func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await running.value
    }
}

/// Why the admin API's port could not start.
public enum AdminAPIError: Error, CustomStringConvertible {
    case cannotListen(reason: String)
    case tls(String)

    public var description: String {
        switch self {
        case .cannotListen(let reason): "admin API: cannot listen: \(reason)"
        case .tls(let reason): "admin API: \(reason)"
        }
    }
}
