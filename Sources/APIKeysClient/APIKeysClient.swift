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
        /// The servers (replicas of one key store) the client spreads its calls over. Empty, every
        /// call fails with FAILED_PRECONDITION.
        public var endpoints: [Endpoint]
        /// The first endpoint's host ("" when there is none); setting it on an empty list adds one.
        public var host: String {
            get { endpoints.first?.host ?? "" }
            set {
                if endpoints.isEmpty {
                    endpoints = [Endpoint(host: newValue, port: 7411)]
                } else {
                    endpoints[0].host = newValue
                }
            }
        }
        /// The first endpoint's port (0 when there is none); setting it on an empty list adds one.
        public var port: Int {
            get { endpoints.first?.port ?? 0 }
            set {
                if endpoints.isEmpty {
                    endpoints = [Endpoint(host: "127.0.0.1", port: newValue)]
                } else {
                    endpoints[0].port = newValue
                }
            }
        }
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
            self.endpoints = [Endpoint(host: host, port: port)]
            self.adminToken = adminToken
            self.timeout = timeout
            self.maxFrameSize = maxFrameSize
            self.keyPrefix = keyPrefix
            self.tls = tls
        }
    }

    /// One server: a host (name or address) and a port.
    public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// `host:port` (an IPv6 address in brackets); nil when `text` is not one.
        public init?(_ text: String) {
            var rest = Substring(text.filter { !$0.isWhitespace })
            var host: Substring
            if rest.hasPrefix("[") {
                guard let close = rest.firstIndex(of: "]") else { return nil }
                host = rest[rest.index(after: rest.startIndex)..<close]
                rest = rest[rest.index(after: close)...]
                guard rest.hasPrefix(":") else { return nil }
                rest = rest.dropFirst()
            } else {
                guard let colon = rest.lastIndex(of: ":") else { return nil }
                host = rest[..<colon]
                rest = rest[rest.index(after: colon)...]
            }
            guard let port = Int(rest), (1...65535).contains(port) else { return nil }
            if host.isEmpty { host = "127.0.0.1" }
            self.init(host: String(host), port: port)
        }

        /// A comma-separated list of endpoints (`a:7411,b:7411`); nil when one is not `host:port`.
        public static func list(_ text: String) -> [Endpoint]? {
            let endpoints = text.split(separator: ",").map { Endpoint(String($0)) }
            guard !endpoints.isEmpty, !endpoints.contains(where: { $0 == nil }) else { return nil }
            return endpoints.compactMap { $0 }
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
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

    public let configuration: Configuration
    /// The format of ``Configuration/keyPrefix``, to refuse malformed keys offline (nil for a
    /// prefix that is not a valid one: then every key goes to the server).
    let secretFormat: SecretFormat?
    /// One per endpoint, in the configuration's order.
    let connections: [EndpointConnection]
    /// Calls sent again to another endpoint after UNAVAILABLE (tests: a retry happened).
    let retriedCalls = Atomic<Int>(0)
    private let nextCallID = Atomic<UInt64>(1)
    /// Round robin over ``connections``.
    private let nextEndpoint = Atomic<Int>(0)

    /// A client on `eventLoopGroup`; by default NIO's process-wide singleton group, so that
    /// many clients in one process share its threads instead of starting their own.
    public init(
        configuration: Configuration, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.configuration = configuration
        self.secretFormat = try? SecretFormat(prefix: configuration.keyPrefix)
        let tlsContext = configuration.tls.map(Self.makeTLSContext)
        self.connections = configuration.endpoints.map { endpoint in
            EndpointConnection(
                endpoint: endpoint, group: eventLoopGroup, tls: tlsContext, serverName: configuration.tls?.serverName,
                maxFrameSize: configuration.maxFrameSize)
        }
    }

    /// Closes the connections, failing calls in flight. The event loop group is the caller's (or
    /// NIO's singleton) and stays up.
    public func close() async {
        for connection in connections { await connection.close() }
    }

    /// Runs `body` with a client of `configuration`, closed when `body` returns or throws (the
    /// scoped form of ``init(configuration:eventLoopGroup:)`` and ``close()``).
    public static func withClient<Value>(
        configuration: Configuration, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        _ body: (APIKeysClient) async throws -> Value
    ) async throws -> Value {
        let client = APIKeysClient(configuration: configuration, eventLoopGroup: eventLoopGroup)
        do {
            let result = try await body(client)
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }

    /// Methods whose calls may be sent again, to another endpoint, when one fails with
    /// UNAVAILABLE: they change nothing. A mutation is never sent twice: its caller gets the
    /// error, which says when the outcome is unknown.
    static let retriedPaths: Set<String> = [
        Authorize.check.path, KeyAdmin.getKey.path, KeyAdmin.listKeys.path, KeyAdmin.listAuditEvents.path,
        KeyAdmin.listPermissions.path, KeyAdmin.getPolicy.path, KeyAdmin.exportAuditChain.path,
    ]

    /// Sends `request` to `method` and returns the decoded reply, on the next endpoint in turn
    /// (skipping ones that just failed to connect); a call of ``retriedPaths`` that meets
    /// UNAVAILABLE (no connection, connection lost, a replica past its staleness bound) goes to
    /// the next endpoint while its deadline allows. Throws ``APIKeysClientError``.
    /// Internal: the public API is one typed function per method (APIKeysClient+Calls.swift).
    func call<Request, Response>(
        _ method: RPCMethod<Request, Response>, _ request: Request, timeout: Duration? = nil
    ) async throws -> Response {
        guard !connections.isEmpty else {
            throw APIKeysClientError(code: .failedPrecondition, message: "the configuration lists no endpoint")
        }
        let budget = timeout ?? configuration.timeout
        let deadline = ContinuousClock.now + budget
        let retried = Self.retriedPaths.contains(method.path)
        let first = pickEndpoint()
        var attempt = 0
        while true {
            let connection = connections[(first + attempt) % connections.count]
            do {
                return try await call(method, request, on: connection, timeout: deadline - ContinuousClock.now)
            } catch let error as APIKeysClientError
                where retried && error.code == .unavailable && attempt + 1 < connections.count
                && ContinuousClock.now < deadline
            {
                retriedCalls.add(1, ordering: .relaxed)
                attempt += 1
            }
        }
    }

    /// The index of the next endpoint to use: in turn, skipping endpoints that failed to connect
    /// in the last second (all of them failing: the next in turn anyway).
    private func pickEndpoint() -> Int {
        let start = nextEndpoint.wrappingAdd(1, ordering: .relaxed).oldValue
        for offset in 0..<connections.count {
            let index = (start &+ offset) % connections.count
            if !connections[index].recentlyFailed { return (index + connections.count) % connections.count }
        }
        return ((start % connections.count) + connections.count) % connections.count
    }

    /// One attempt of a call on `connection`.
    private func call<Request, Response>(
        _ method: RPCMethod<Request, Response>, _ request: Request, on connection: EndpointConnection, timeout: Duration
    ) async throws -> Response {
        let timeoutMS = max(1, Self.milliseconds(timeout))
        let callID = nextCallID.wrappingAdd(1, ordering: .relaxed).oldValue
        var envelope = Envelope(callID: callID, method: method.path, timeoutMS: timeoutMS)
        if method.isKeyAdmin, let token = configuration.adminToken {
            envelope.metadata[MetadataKey.authorization] = "Bearer \(token)"
        }
        do {
            envelope.payload = try request.serializedBytes()
            var frame = ByteBuffer()
            try Framing.write(envelope, to: &frame)
            let channel = try await connection.connectedChannel()
            let promise = channel.eventLoop.makePromise(of: Envelope.self)
            // The handler succeeds `handedOver` once it owns the call; if the channel closed before
            // that (no handler to take it), nothing else would ever complete the call's promise.
            let handedOver = channel.eventLoop.makePromise(of: Void.self)
            handedOver.futureResult.whenFailure { error in
                promise.fail(
                    APIKeysClientError(
                        code: .unavailable, message: "connection closed: \(Self.plainReason(error))", cause: error))
            }
            // The server keeps a KeyAdmin call's deadline itself and answers DEADLINE_EXCEEDED only
            // when nothing was changed; the local timer waits a little longer for that answer, and
            // fires only when the server is unreachable or stuck (then the outcome is unknown).
            let deadline =
                TimeAmount.milliseconds(Int64(timeoutMS)) + (method.isKeyAdmin ? Self.adminReplyGrace : .zero)
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
