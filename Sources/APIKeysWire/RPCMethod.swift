/// What an RPC descriptor tells without its types: enough to route and to log a call.
public protocol RPCMethodDescriptor: Sendable {
    /// The service's full name, e.g. `apikeys.v1.KeyAdmin`.
    var service: String { get }
    /// The method's name in its service, e.g. `CreateKey`.
    var name: String { get }
    /// The full method path carried in ``Envelope/method``, e.g. `/apikeys.v1.KeyAdmin/CreateKey`.
    var path: String { get }
}

/// One RPC of the contract with its request and reply types. Generated from proto/ (e.g.
/// ``KeyAdmin/createKey``, ``Authorize/check``); a call built from one cannot pair a request
/// with the wrong method.
public struct RPCMethod<Request: WireMessage, Response: WireMessage>: RPCMethodDescriptor, Hashable {
    public let service: String
    public let name: String
    public let path: String

    init(service: String, name: String) {
        self.service = service
        self.name = name
        self.path = "/\(service)/\(name)"
    }
}

extension WireContract {
    /// The method whose path is `path`, if the contract has one.
    public static func method(path: String) -> (any RPCMethodDescriptor)? {
        methods.first { $0.path == path }
    }
}

/// Sends calls to their handlers by method path: each handler is registered with its typed
/// descriptor, so it decodes the request and encodes the reply of that method and no other.
/// A service's generated `router(for:)` registers every method of it.
public struct RPCRouter<Context>: Sendable {
    /// One method's handler, taking and giving serialized messages.
    public struct Route: Sendable {
        public let method: any RPCMethodDescriptor
        fileprivate let handle: @Sendable ([UInt8], Context) async throws -> [UInt8]

        /// Decodes `payload` as the method's request, runs the handler, encodes its reply.
        /// Throws ``WireError`` for a payload that is not the request, or what the handler throws.
        public func callAsFunction(payload: [UInt8], context: Context) async throws -> [UInt8] {
            try await handle(payload, context)
        }
    }

    private var routes: [String: Route] = [:]

    public init() {}

    /// Routes `method` to `handler`, replacing an earlier handler of the same method.
    public mutating func register<Request, Response>(
        _ method: RPCMethod<Request, Response>, _ handler: @escaping @Sendable (Request, Context) async throws -> Response
    ) {
        routes[method.path] = Route(method: method) { payload, context in
            try await handler(try Request(serializedBytes: payload), context).serializedBytes()
        }
    }

    /// The handler of the method at `path`, or nil when no method there is routed.
    public func route(for path: String) -> Route? {
        routes[path]
    }
}

/// Envelope metadata keys.
public enum MetadataKey {
    /// `Bearer <admin token>`, required on KeyAdmin calls.
    public static let authorization = "authorization"
}

extension RPCMethodDescriptor {
    /// True for the methods of KeyAdmin, whose calls need an admin token.
    public var isKeyAdmin: Bool { service == KeyAdmin.serviceName }
}
