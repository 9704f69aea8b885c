import APIKeysCore
import APIKeysHTTP
import APIKeysServer
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1

/// One forward-auth request on the HTTP port taken apart, as ``StagesBenchmark`` takes the RPC
/// Check: `GET /authorize/api/x` with `Authorization: Bearer …`, as `wrk` sends it straight at the
/// port (`bench/compare-forward-auth.sh`), judged by the route `GET /api/** jobs:read`. Each
/// stage of ``HTTPConnectionHandler`` on its own, then the whole port on an `EmbeddedChannel`
/// (NIO's decoder and the connection handler, no socket): what lies between the bytes a read
/// returns and the bytes a write takes.
enum HTTPStages {
    static func run(checks: Int, counter: AllocationCounter) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("apikeyd-bench-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = ServerConfiguration()
        configuration.port = 0
        configuration.dataDirectory = directory
        configuration.eventLoopThreads = 1
        configuration.auditQueueCapacity = 1_000_000
        let metrics = HTTPFrontend.makeMetrics()  // as apikeyd runs with an HTTP port
        configuration.metricsFactory = metrics.factory
        var logger = Logger(label: "apikeyd-bench")
        logger.logLevel = .warning
        let server = try await APIKeysServer.start(configuration: configuration, logger: logger)
        do {
            try await measure(server: server, metrics: metrics, checks: checks, counter: counter)
        } catch {
            await server.shutdown()
            throw error
        }
        await server.shutdown()
    }

    private static func measure(
        server: APIKeysServer, metrics: HTTPFrontend.Metrics, checks: Int, counter: AllocationCounter
    ) async throws {
        let secret = try await server.service.createKey(name: "bench", permissions: ["jobs:read"], actor: "bench")
            .secret
        try measure(server: server, metrics: metrics, secret: secret, checks: checks, counter: counter)
    }

    /// Synchronous, on one thread: `EmbeddedChannel`s must stay on the thread that made them.
    private static func measure(
        server: APIKeysServer, metrics: HTTPFrontend.Metrics, secret: String, checks: Int, counter: AllocationCounter
    ) throws {
        let routes = try RouteTable(parsing: "GET /api/** jobs:read\n", catalog: .standard)
        let responder = HTTPResponder(server: server, metrics: metrics, forwardAuth: ForwardAuthOptions(routes: routes))
        let request = ByteBuffer(
            string: "GET /authorize/api/x HTTP/1.1\r\nHost: 127.0.0.1:7412\r\nAuthorization: Bearer \(secret)\r\n\r\n")

        let decoding = EmbeddedChannel(handlers: [
            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)), HeadKeeper(),
        ])
        try decoding.writeInbound(request)
        let keeper = try decoding.pipeline.syncOperations.handler(type: HeadKeeper.self)
        guard let head = keeper.head else { throw StagesBenchmark.StageError() }

        // Counted on the loop's own tally, as the port's loops count theirs.
        let port = EmbeddedChannel()
        server.metrics?.countChecks(onLoopsOf: port.eventLoop)
        let tally = server.metrics?.tally(for: port.eventLoop)
        let peer = responder.peer("127.0.0.1", tally: tally)
        var key = ""
        var path = ""
        var permissions: [String]? = nil
        var answer = responder.answer(head, peer: peer)
        guard answer.status == .ok else { throw StagesBenchmark.StageError() }
        var memo = AllowedResponseMemo()
        var outbound = ByteBuffer()
        outbound.reserveCapacity(64 * 1024)

        try port.pipeline.syncOperations.addHandlers(
            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)),
            HTTPConnectionHandler(
                responder: responder, peer: "127.0.0.1", idleTimeout: .seconds(75), offLoop: OffLoopTasks(),
                checkTally: tally))
        var response = ByteBuffer()

        let stages: [(String, () throws -> Void)] = [
            (
                "request bytes -> HTTPRequestHead (NIOHTTP1's decoder, as the SwiftNIO floor has it)",
                { try decoding.writeInbound(request) }
            ),
            ("the path: the request target without its query, a String", { path = HTTPResponder.path(of: head) }),
            ("the credential: the secret of Authorization", { key = ForwardAuth.presentedKey(head.headers).key }),
            (
                "the route: the original path normalized, the route table's permissions",
                { permissions = routes.permissions(method: "GET", path: try RequestPath.normalized("/api/x")) }
            ),
            (
                "check: decision + audit event made and queued (the connection's secret memo)",
                {
                    _ = try server.check(
                        secret: key, permissions: permissions ?? [], resource: "GET /api/x", clientAddress: "127.0.0.1",
                        memo: peer.secretMemo, tally: tally)
                }
            ),
            ("forward-auth's whole answer (HTTPResponder.answer)", { answer = responder.answer(head, peer: peer) }),
            (
                "the allowed answer -> response bytes (the connection's AllowedResponseMemo)",
                {
                    outbound.clear()
                    _ = memo.write(answer, close: false, keepAlive: false, to: &outbound)
                }
            ),
            (
                "whole: request bytes -> response bytes through the port's handlers (EmbeddedChannel)",
                {
                    try port.writeInbound(request)
                    guard let bytes = try port.readOutbound(as: ByteBuffer.self) else {
                        throw StagesBenchmark.StageError()
                    }
                    response = bytes
                }
            ),
        ]
        print("HTTP /authorize (the request wrk sends straight at the port):")
        try StagesBenchmark.measure(stages, checks: checks, counter: counter, service: server.service)
        guard response.readableBytesView.starts(with: "HTTP/1.1 200 OK\r\n".utf8), !key.isEmpty, !path.isEmpty else {
            throw StagesBenchmark.StageError()
        }
        _ = try? decoding.finish()
        _ = try? port.finish()
    }

    /// Keeps the head of the last request the decoder made.
    private final class HeadKeeper: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        var head: HTTPRequestHead?

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .head(let head) = unwrapInboundIn(data) { self.head = head }
        }
    }
}
