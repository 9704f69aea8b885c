public import APIKeysWire
import APIKeysCore
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
#if canImport(Glibc)
    import Glibc
#endif

/// The Swift client of apikeyd: one connection carrying many concurrent calls.
///
/// ```swift
/// let client = APIKeysClient(configuration: .init(host: "127.0.0.1", port: 7411, adminToken: token))
/// let created = try await client.createKey(name: "ci", permissions: ["jobs:read"])
/// let answer = try await client.check(key: created.secret, permissions: ["jobs:read"])
/// await client.close()
/// ```
///
/// The connection is opened on the first call and opened again on the next call after it
/// breaks (a server restart, say); calls in flight when it breaks fail with UNAVAILABLE.
public final class APIKeysClient: Sendable {
    /// Where and how to connect.
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Sent as `authorization: Bearer <token>` on KeyAdmin calls; Check needs none.
        public var adminToken: String?
        /// Deadline of a call unless the call says otherwise; also sent to the server.
        public var timeout: Duration
        /// Largest reply frame accepted.
        public var maxFrameSize: Int
        /// Prefix of the server's secrets, to reject malformed keys without a network call.
        public var keyPrefix: String
        /// TLS to the server; nil: plain TCP, for a server on loopback only.
        public var tls: TLS?

        public init(
            host: String = "127.0.0.1", port: Int = 7411, adminToken: String? = nil, timeout: Duration = .seconds(10),
            maxFrameSize: Int = Framing.defaultClientMaxFrameSize, keyPrefix: String = SecretFormat.defaultPrefix,
            tls: TLS? = nil
        ) {
            self.host = host
            self.port = port
            self.adminToken = adminToken
            self.timeout = timeout
            self.maxFrameSize = maxFrameSize
            self.keyPrefix = keyPrefix
            self.tls = tls
        }
    }

    /// How the client speaks TLS (1.2 or later) to the server. The server's certificate is always
    /// verified: signed by a trusted CA, and naming the server (``serverName``, else the configured
    /// host) or carrying the IP address connected to.
    public struct TLS: Sendable, Hashable {
        /// PEM file of the CA certificates that may sign the server's; nil: the system's trust store.
        public var caFile: String?
        /// The client's certificate chain and key (PEM), for a server that requires mutual TLS.
        public var certificateFile: String?
        public var privateKeyFile: String?
        /// The name the server's certificate must carry (and the SNI); nil: the configured host.
        public var serverName: String?

        public init(
            caFile: String? = nil, certificateFile: String? = nil, privateKeyFile: String? = nil,
            serverName: String? = nil
        ) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.privateKeyFile = privateKeyFile
            self.serverName = serverName
        }
    }

    private enum ConnectionState {
        case idle
        case connecting(EventLoopFuture<any Channel>)
        case connected(any Channel)
    }

    public let configuration: Configuration
    /// The format of ``Configuration/keyPrefix``, to refuse malformed keys offline (nil for a
    /// prefix that is not a valid one: then every key goes to the server).
    let secretFormat: SecretFormat?
    private let group: any EventLoopGroup
    private let state = Mutex<ConnectionState>(.idle)
    /// Made once from ``Configuration/tls``: the context, or why the files cannot be used.
    private let tlsContext: Result<NIOSSLContext, APIKeysClientError>?
    private let nextCallID = Atomic<UInt64>(1)

    /// A client on `eventLoopGroup`; by default NIO's process-wide singleton group, so that
    /// many clients in one process share its threads instead of starting their own.
    public init(
        configuration: Configuration, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.configuration = configuration
        self.secretFormat = try? SecretFormat(prefix: configuration.keyPrefix)
        self.tlsContext = configuration.tls.map(Self.makeTLSContext)
        self.group = eventLoopGroup
    }

    /// Closes the connection, failing calls in flight. The event loop group is the caller's (or
    /// NIO's singleton) and stays up.
    public func close() async {
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

    /// Sends `request` to `method` and returns the decoded reply. Throws ``APIKeysClientError``.
    /// Internal: the public API is one typed function per method (APIKeysClient+Calls.swift).
    func call<Request, Response>(
        _ method: RPCMethod<Request, Response>, _ request: Request, timeout: Duration? = nil
    ) async throws -> Response {
        let timeoutMS = Self.milliseconds(timeout ?? configuration.timeout)
        let callID = nextCallID.wrappingAdd(1, ordering: .relaxed).oldValue
        var envelope = Envelope(callID: callID, method: method.path, timeoutMS: timeoutMS)
        if method.isKeyAdmin, let token = configuration.adminToken {
            envelope.metadata[MetadataKey.authorization] = "Bearer \(token)"
        }
        do {
            envelope.payload = try request.serializedBytes()
            var frame = ByteBuffer()
            try Framing.write(envelope, to: &frame)
            let channel = try await connectedChannel()
            let promise = channel.eventLoop.makePromise(of: Envelope.self)
            // The handler succeeds `handedOver` once it owns the call; if the channel closed before
            // that (no handler to take it), nothing else would ever complete the call's promise.
            let handedOver = channel.eventLoop.makePromise(of: Void.self)
            handedOver.futureResult.whenFailure { error in
                promise.fail(APIKeysClientError(
                        code: .unavailable, message: "connection closed: \(Self.plainReason(error))", cause: error))
            }
            // The server keeps a KeyAdmin call's deadline itself and answers DEADLINE_EXCEEDED only
            // when nothing was changed; the local timer waits a little longer for that answer, and
            // fires only when the server is unreachable or stuck (then the outcome is unknown).
            let deadline = TimeAmount.milliseconds(Int64(timeoutMS)) + (method.isKeyAdmin ? Self.adminReplyGrace : .zero)
            channel.writeAndFlush(
                OutboundCall(callID: callID, frame: frame, timeout: deadline, promise: promise), promise: handedOver)
            let reply = try await promise.futureResult.get()
            guard reply.status == .ok else {
                throw APIKeysClientError(code: reply.status, message: reply.statusMessage)
            }
            do {
                return try Response(serializedBytes: reply.payload)
            } catch {
                throw APIKeysClientError(
                    code: .internal, message: "reply is not a valid \(Response.self): \(error)", cause: error)
            }
        } catch let error as WireError {
            throw APIKeysClientError(code: .invalidArgument, message: "\(error)", cause: error)
        }
    }

    /// How long past a KeyAdmin call's deadline the client still waits for the server's answer.
    static let adminReplyGrace = TimeAmount.seconds(2)

    private static func milliseconds(_ duration: Duration) -> UInt32 {
        let (seconds, attoseconds) = duration.components
        return UInt32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000)
    }

    /// The open connection, opening one if there is none.
    private func connectedChannel() async throws -> any Channel {
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
                code: .unavailable,
                message: "cannot connect to \(configuration.host):\(configuration.port): \(Self.plainReason(error))",
                cause: error)
        }
    }

    /// Why a connection failed, in words ("connection refused"), not NIO's nested error values.
    static func plainReason(_ error: any Error) -> String {
        switch error {
        case let error as NIOConnectionError:
            if let first = error.connectionErrors.first { return plainReason(first.error) }
            return error.dnsAError != nil || error.dnsAAAAError != nil ? "the host name does not resolve" : "no address"
        case let error as IOError:
            return String(cString: strerror(error.errnoCode)).lowercased()
        case ChannelError.connectTimeout:
            return "timed out"
        default:
            return "\(error)"
        }
    }

    private static func makeTLSContext(_ tls: TLS) -> Result<NIOSSLContext, APIKeysClientError> {
        Result { try tls.makeContext() }.mapError { error in
            APIKeysClientError(code: .failedPrecondition, message: "TLS files cannot be used: \(error)", cause: error)
        }
    }

    private func connect() -> EventLoopFuture<any Channel> {
        let maxFrameSize = configuration.maxFrameSize
        let tls: (NIOSSLContext, String?)?
        switch tlsContext {
        case .failure(let error): return group.next().makeFailedFuture(error)
        case .success(let context):
            let name = configuration.tls?.serverName ?? configuration.host
            // SNI takes a name, never an address; an address is verified against the certificate's.
            tls = (context, name.contains(where: { $0.isLetter }) && !name.contains(":") ? name : nil)
        case nil: tls = nil
        }
        let future = ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let (context, serverName) = tls {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: context, serverHostname: serverName))
                    }
                    try channel.pipeline.syncOperations.addHandler(ClientConnectionHandler(maxFrameSize: maxFrameSize))
                }
            }
            .connect(host: configuration.host, port: configuration.port)
        future.whenComplete { [self] result in
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

extension APIKeysClient.TLS {
    /// The client TLS context these files make (TLS 1.2+, the server's certificate verified); the
    /// package's load generator speaks TLS through the same one.
    package func makeContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let caFile {
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
        }
        if let certificateFile {
            configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) }
        }
        if let privateKeyFile {
            configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: privateKeyFile, format: .pem))
        }
        return try NIOSSLContext(configuration: configuration)
    }
}
