import Dispatch
import NIOCore
import NIOPosix
import NIOSSL
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
    private let group: any EventLoopGroup
    private let tls: Result<NIOSSLContext, APIKeysClientError>?
    private let serverName: String?
    private let maxFrameSize: Int
    private let state = Mutex<State>(.idle)
    /// When the last attempt to connect failed (uptime nanoseconds; 0: it did not).
    private let failedAt = Atomic<UInt64>(0)

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
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: context, serverHostname: serverName))
                    }
                    try channel.pipeline.syncOperations.addHandler(ClientConnectionHandler(maxFrameSize: maxFrameSize))
                }
            }
            .connect(host: endpoint.host, port: endpoint.port)
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
