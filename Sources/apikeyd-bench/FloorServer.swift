import APIKeysServer
import APIKeysWire
import ArgumentParser
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// `apikeyd-bench floor`: the leanest SwiftNIO server of apikeyd's protocol, the reference below
/// which apikeyd cannot go on this framework. It frames and decodes each call as apikeyd does
/// (``FrameBuffer``, ``CheckCallCodec``) and answers every Check "allow" from one reply packed
/// once, with no key looked up, no event audited and no per-connection bookkeeping (deadlines,
/// backpressure, metrics); the replies of one read go out in one write, flushed when the read
/// is done. With `--http`, the same for forward-auth: NIOHTTP1's request decoder, as apikeyd's
/// HTTP port has it, and every request answered 200 from bytes made once. `make bench` and
/// `bench/compare-forward-auth.sh` drive it beside Redis, nginx and apikeyd with the same
/// generators.
struct FloorServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "floor",
        abstract: "Answer Check (with --http, every HTTP request) at once over SwiftNIO: make bench's floor.")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on (0: any free port; the port is printed).") var port = 0
    @Option(help: "Event loop threads.") var eventLoops = 1
    @Flag(help: "Speak HTTP/1.1 (answer every request 200) instead of apikeyd's RPC protocol.") var http = false

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: eventLoops)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // apikeyd's own read limits, so that both read the same bursts.
            .childChannelOption(.maxMessagesPerRead, value: ReadLimits.maxMessagesPerRead)
            .childChannelOption(.recvAllocator, value: ReadLimits.allocator)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { [http] in
                    if http {
                        try channel.pipeline.syncOperations.addHandlers(
                            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)),
                            FloorHTTPHandler())
                    } else {
                        try channel.pipeline.syncOperations.addHandler(FloorConnectionHandler())
                    }
                }
            }
            .bind(host: host, port: port).get()
        print("listening on \(host):\(channel.localAddress?.port ?? port)")
        fflush(nil)  // the port line, for a script reading a pipe
        try await channel.closeFuture.get()
    }
}

/// One connection of ``FloorServer``: Check calls answered "allow", anything else closes it.
final class FloorConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let answer = CheckResponse(
        decision: .allow, httpStatus: 200, keyID: "key_0123456789abcdef", keyName: "bench")

    private let codec = CheckCallCodec()
    private var inbound = FrameBuffer(maxFrameSize: Framing.defaultServerMaxFrameSize)
    private var outbound = ByteBuffer()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        inbound.append(unwrapInboundIn(data))
        do {
            while let frame = try inbound.nextFrame() {
                guard case .check(let callID, _, _) = try codec.decode(frame: frame) else {
                    context.close(promise: nil)
                    return
                }
                if !codec.repeatCheckReply(callID: callID, to: &outbound) {
                    try codec.writeCheckReply(callID: callID, response: Self.answer, to: &outbound)
                }
            }
        } catch {
            context.close(promise: nil)
        }
        inbound.compact()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard outbound.readableBytes > 0 else { return }
        context.writeAndFlush(wrapOutboundOut(outbound), promise: nil)
        outbound.clear()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// One HTTP connection of ``FloorServer``: every request answered 200 with no body, from bytes
/// made once, written when its end is read and flushed when the read is done; a request that
/// does not keep the connection alive has it closed once answered.
final class FloorHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = ByteBuffer

    private static let response = ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    private var keepAlive = true
    private var answered = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            keepAlive = head.isKeepAlive
        case .body:
            break
        case .end:
            context.write(wrapOutboundOut(Self.response), promise: nil)
            answered = true
            if !keepAlive {
                context.flush()
                context.close(promise: nil)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard answered else { return }
        answered = false
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
