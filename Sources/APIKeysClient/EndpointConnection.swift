import Dispatch
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// The client's connection to one endpoint: opened on the first call, opened again on the next
/// call after it breaks.
final class EndpointConnection: Sendable {
    private enum State {
        case idle
        case connecting(EventLoopFuture<any Channel>)
        case connected(any Channel)
    }

    let endpoint: APIKeysClient.Endpoint
    let group: any EventLoopGroup
    private let tls: Result<NIOSSLContext, APIKeysClientError>?
    private let serverName: String?
    private let maxFrameSize: Int
    private let state = Mutex<State>(.idle)
    /// When the last attempt to connect failed (uptime nanoseconds; 0: it did not).
    private let failedAt = Atomic<UInt64>(0)
    /// Attempts to connect so far (tests: a connection kept is not opened again).
    let connectAttempts = Atomic<Int>(0)

    init(
        endpoint: APIKeysClient.Endpoint, group: any EventLoopGroup, tls: Result<NIOSSLContext, APIKeysClientError>?,
        serverName: String?, maxFrameSize: Int
    ) {
        self.endpoint = endpoint
        self.group = group
        self.tls = tls
        self.serverName = serverName
        self.maxFrameSize = maxFrameSize
    }

    /// True within a second of a failed attempt to connect: the client prefers other endpoints.
    var recentlyFailed: Bool {
        let at = failedAt.load(ordering: .relaxed)
        return at != 0 && DispatchTime.now().uptimeNanoseconds - at < 1_000_000_000
    }

    /// Closes the connection, failing calls in flight.
    func close() async {
        let pending: EventLoopFuture<any Channel>? = state.withLock { state in
            defer { state = .idle }
            switch state {
            case .connected(let channel): return channel.eventLoop.makeSucceededFuture(channel)
            case .connecting(let future): return future
            case .idle: return nil
            }
        }
        if let channel = try? await pending?.get() { try? await channel.close() }
    }

    /// The open connection, opening one if there is none. Throws ``APIKeysClientError`` (UNAVAILABLE).
    func connectedChannel() async throws -> any Channel {
        let future: EventLoopFuture<any Channel> = state.withLock { state in
            switch state {
            case .connected(let channel) where channel.isActive:
                return channel.eventLoop.makeSucceededFuture(channel)
            case .connecting(let future):
                return future
            default:
                let future = connect()
                state = .connecting(future)
                return future
            }
        }
        do {
            return try await future.get()
        } catch let error as APIKeysClientError {
            throw error
        } catch {
            throw APIKeysClientError(
                code: .unavailable, message: "cannot connect to \(endpoint): \(APIKeysClient.plainReason(error))",
                cause: error)
        }
    }

    private func connect() -> EventLoopFuture<any Channel> {
        connectAttempts.add(1, ordering: .relaxed)
        let maxFrameSize = maxFrameSize
        let tlsSetup: (NIOSSLContext, String?)?
        switch tls {
        case .failure(let error): return group.next().makeFailedFuture(error)
        case .success(let context):
            let name = serverName ?? endpoint.host
            // SNI takes a name, never an address; an address is verified against the certificate's.
            tlsSetup = (context, name.contains(where: { $0.isLetter }) && !name.contains(":") ? name : nil)
        case nil: tlsSetup = nil
        }
        let future = ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let (context, serverName) = tlsSetup {
                        try channel.pipeline.syncOperations.addHandlers(
                            NIOSSLClientHandler(context: context, serverHostname: serverName),
                            TLSHandshakeWaiter(promise: channel.eventLoop.makePromise()))
                    }
                    try channel.pipeline.syncOperations.addHandler(ClientConnectionHandler(maxFrameSize: maxFrameSize))
                }
            }
            .connect(host: endpoint.host, port: endpoint.port)
            .flatMap { channel in
                // With TLS, connected means handshaken: a refused certificate is the connect's
                // error, said as such, not a later "connection closed".
                guard tlsSetup != nil else { return channel.eventLoop.makeSucceededFuture(channel) }
                return channel.pipeline.handler(type: TLSHandshakeWaiter.self).flatMap { waiter in
                    waiter.promise.futureResult.map { channel }
                }.flatMapErrorThrowing { error in
                    channel.close(promise: nil)
                    throw error
                }
            }
        future.whenComplete { [self] result in
            failedAt.store((try? result.get()) == nil ? DispatchTime.now().uptimeNanoseconds : 0, ordering: .relaxed)
            state.withLock { state in
                guard case .connecting(let current) = state, current === future else { return }
                switch result {
                case .success(let channel): state = .connected(channel)
                case .failure: state = .idle
                }
            }
        }
        return future
    }
}

/// Completes its promise when the TLS handshake ends: succeeded, or failed with the reason
/// (a certificate not trusted, a protocol refused) or with the connection's end.
final class TLSHandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny
    let promise: EventLoopPromise<Void>

    init(promise: EventLoopPromise<Void>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { promise.succeed() }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(ChannelError.eof)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { promise.fail(ChannelError.ioOnClosedChannel) }
}
