import NIOCore
import NIOPosix
import Synchronization

/// A TCP proxy on 127.0.0.1 whose target can be switched, as a virtual IP or a failover proxy in
/// front of a highly available database: ``switchTarget(port:)`` cuts every open connection and
/// sends new ones to the new target. A connection it cannot forward is closed at once.
public final class TCPProxy: Sendable {
    /// The port clients connect to.
    public let port: Int
    private let state: State
    private let serverChannel: any Channel

    private final class State: Sendable {
        let target: Mutex<Int?>
        /// Both channels of every forwarded connection.
        let open = Mutex<[ObjectIdentifier: any Channel]>([:])

        init(target: Int?) { self.target = Mutex(target) }

        func track(_ channel: any Channel) {
            open.withLock { $0[ObjectIdentifier(channel)] = channel }
            channel.closeFuture.whenComplete { _ in
                _ = self.open.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
            }
        }
    }

    private init(port: Int, state: State, serverChannel: any Channel) {
        self.port = port
        self.state = state
        self.serverChannel = serverChannel
    }

    /// Listens on a free port of 127.0.0.1, forwarding to `127.0.0.1:targetPort`.
    public static func start(targetPort: Int) async throws -> TCPProxy {
        let state = State(target: targetPort)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // The accepted channel is registered (and read) only once this future completes.
            .childChannelInitializer { inbound in
                guard let target = state.target.withLock({ $0 }) else { return inbound.close() }
                return ClientBootstrap(group: inbound.eventLoop).connect(host: "127.0.0.1", port: target)
                    .flatMapThrowing { outbound in
                        try inbound.pipeline.syncOperations.addHandler(Forward(to: outbound))
                        try outbound.pipeline.syncOperations.addHandler(Forward(to: inbound))
                        state.track(inbound)
                        state.track(outbound)
                    }
                    .flatMapError { _ in inbound.close() }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return TCPProxy(port: channel.localAddress?.port ?? 0, state: state, serverChannel: channel)
    }

    /// Sends new connections to `127.0.0.1:port` (nil: refuses them) and cuts every open one.
    public func switchTarget(port: Int?) async {
        state.target.withLock { $0 = port }
        let open = state.open.withLock { Array($0.values) }
        for channel in open { try? await channel.close() }
    }

    public func close() async {
        await switchTarget(port: nil)
        try? await serverChannel.close()
    }

    /// Writes what one side reads to the other; closes the other when this one closes.
    private final class Forward: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        private let partner: any Channel

        init(to partner: any Channel) { self.partner = partner }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            partner.writeAndFlush(unwrapInboundIn(data), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            partner.close(promise: nil)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }
}
