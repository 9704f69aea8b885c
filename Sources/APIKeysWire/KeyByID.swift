internal import CAPIKeysProto

/// KeyAdmin/GetKey request.
public struct GetKeyRequest: WireMessage {
    public var id: String
    public init(id: String = "") { self.id = id }
    public init() { self.init(id: "") }

    public static let codec = WireCodec<GetKeyRequest>(
        id: "apikeys.v1.GetKeyRequest",
        initialize: apikeys__v1__get_key_request__init, unpack: apikeys__v1__get_key_request__unpack,
        field: \.id, get: \.id, make: { GetKeyRequest(id: $0) })
}

/// KeyAdmin/GetKey reply.
public struct GetKeyResponse: WireMessage {
    public var key: ApiKey
    public init(key: ApiKey = ApiKey()) { self.key = key }
    public init() { self.init(key: ApiKey()) }

    public static let codec = WireCodec<GetKeyResponse>(
        key: "apikeys.v1.GetKeyResponse",
        initialize: apikeys__v1__get_key_response__init, unpack: apikeys__v1__get_key_response__unpack,
        field: \.key, get: \.key, make: { GetKeyResponse(key: $0) })
}

/// KeyAdmin/RotateKey request: a new secret for the key; the old one stops working at once.
public struct RotateKeyRequest: WireMessage {
    public var id: String
    public init(id: String = "") { self.id = id }
    public init() { self.init(id: "") }

    public static let codec = WireCodec<RotateKeyRequest>(
        id: "apikeys.v1.RotateKeyRequest",
        initialize: apikeys__v1__rotate_key_request__init, unpack: apikeys__v1__rotate_key_request__unpack,
        field: \.id, get: \.id, make: { RotateKeyRequest(id: $0) })
}

/// KeyAdmin/RotateKey reply.
public struct RotateKeyResponse: WireMessage {
    public var key: ApiKey
    /// The new raw key, shown this once.
    public var secret: String

    public init(key: ApiKey = ApiKey(), secret: String = "") {
        self.key = key
        self.secret = secret
    }

    public init() { self.init(secret: "") }

    public static let codec = WireCodec<RotateKeyResponse>(
        keyAndSecret: "apikeys.v1.RotateKeyResponse",
        initialize: apikeys__v1__rotate_key_response__init,
        unpack: apikeys__v1__rotate_key_response__unpack,
        key: \.key, secret: \.secret,
        get: { ($0.key, $0.secret) },
        make: { RotateKeyResponse(key: $0, secret: $1) }
    )
}

/// KeyAdmin/DeleteKey request: deletes the key for good; its audit events stay.
public struct DeleteKeyRequest: WireMessage {
    public var id: String
    public init(id: String = "") { self.id = id }
    public init() { self.init(id: "") }

    public static let codec = WireCodec<DeleteKeyRequest>(
        id: "apikeys.v1.DeleteKeyRequest",
        initialize: apikeys__v1__delete_key_request__init, unpack: apikeys__v1__delete_key_request__unpack,
        field: \.id, get: \.id, make: { DeleteKeyRequest(id: $0) })
}

/// KeyAdmin/DeleteKey reply (empty).
public struct DeleteKeyResponse: WireMessage {
    public init() {}

    public static let codec = WireCodec<DeleteKeyResponse>(
        empty: "apikeys.v1.DeleteKeyResponse",
        initialize: apikeys__v1__delete_key_response__init, unpack: apikeys__v1__delete_key_response__unpack,
        value: { DeleteKeyResponse() })
}

/// KeyAdmin/SetKeyEnabled request.
public struct SetKeyEnabledRequest: WireMessage {
    public var id: String
    public var enabled: Bool

    public init(id: String = "", enabled: Bool = false) {
        self.id = id
        self.enabled = enabled
    }

    public init() { self.init(id: "") }

    public static let codec = WireCodec<SetKeyEnabledRequest>(
        "apikeys.v1.SetKeyEnabledRequest",
        initialize: apikeys__v1__set_key_enabled_request__init,
        unpack: apikeys__v1__set_key_enabled_request__unpack,
        read: { c, arena in
            SetKeyEnabledRequest(
                id: try arena.string(c.id, field: "id", of: "apikeys.v1.SetKeyEnabledRequest"), enabled: c.enabled != 0)
        },
        write: { value, c, arena in
            c.id = try arena.cString(value.id, field: "id", of: "apikeys.v1.SetKeyEnabledRequest")
            c.enabled = value.enabled ? 1 : 0
        }
    )
}

/// KeyAdmin/SetKeyEnabled reply.
public struct SetKeyEnabledResponse: WireMessage {
    public var key: ApiKey
    public init(key: ApiKey = ApiKey()) { self.key = key }
    public init() { self.init(key: ApiKey()) }

    public static let codec = WireCodec<SetKeyEnabledResponse>(
        key: "apikeys.v1.SetKeyEnabledResponse",
        initialize: apikeys__v1__set_key_enabled_response__init,
        unpack: apikeys__v1__set_key_enabled_response__unpack,
        field: \.key, get: \.key, make: { SetKeyEnabledResponse(key: $0) })
}
