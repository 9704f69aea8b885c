internal import CAPIKeysProto

/// KeyAdmin/CreateKey request.
public struct CreateKeyRequest: WireMessage {
    public var name: String
    /// At least one, each from the catalog.
    public var permissions: [String]
    /// 0 = never; otherwise in the future.
    public var expiresAtMS: Int64

    public init(name: String = "", permissions: [String] = [], expiresAtMS: Int64 = 0) {
        self.name = name
        self.permissions = permissions
        self.expiresAtMS = expiresAtMS
    }

    public init() { self.init(name: "") }

    public static let codec = WireCodec<CreateKeyRequest>(
        "apikeys.v1.CreateKeyRequest",
        initialize: apikeys__v1__create_key_request__init,
        unpack: apikeys__v1__create_key_request__unpack,
        read: { c, arena in
            let name = "apikeys.v1.CreateKeyRequest"
            return CreateKeyRequest(
                name: try arena.string(c.name, field: "name", of: name),
                permissions: try arena.strings(c.permissions, count: c.n_permissions, field: "permissions", of: name),
                expiresAtMS: c.expires_at_ms
            )
        },
        write: { value, c, arena in
            let name = "apikeys.v1.CreateKeyRequest"
            c.name = try arena.cString(value.name, field: "name", of: name)
            (c.n_permissions, c.permissions) = try arena.cStrings(value.permissions, field: "permissions", of: name)
            c.expires_at_ms = value.expiresAtMS
        }
    )
}

/// KeyAdmin/CreateKey reply.
public struct CreateKeyResponse: WireMessage {
    public var key: ApiKey
    /// The raw key, shown this once.
    public var secret: String

    public init(key: ApiKey = ApiKey(), secret: String = "") {
        self.key = key
        self.secret = secret
    }

    public init() { self.init(secret: "") }

    public static let codec = WireCodec<CreateKeyResponse>(
        keyAndSecret: "apikeys.v1.CreateKeyResponse",
        initialize: apikeys__v1__create_key_response__init,
        unpack: apikeys__v1__create_key_response__unpack,
        key: \.key, secret: \.secret,
        get: { ($0.key, $0.secret) },
        make: { CreateKeyResponse(key: $0, secret: $1) }
    )
}
