internal import CAPIKeysProto

/// A set of permission names, wrapped so that "absent" and "empty" differ on the wire.
public struct PermissionSet: WireMessage {
    public var names: [String]
    public init(names: [String] = []) { self.names = names }
    public init() { self.init(names: []) }

    public static let codec = WireCodec<PermissionSet>(
        "apikeys.v1.PermissionSet",
        initialize: apikeys__v1__permission_set__init,
        unpack: apikeys__v1__permission_set__unpack,
        read: { c, arena in
            PermissionSet(
                names: try arena.strings(c.names, count: c.n_names, field: "names", of: "apikeys.v1.PermissionSet"))
        },
        write: { value, c, arena in
            (c.n_names, c.names) = try arena.cStrings(value.names, field: "names", of: "apikeys.v1.PermissionSet")
        }
    )
}

/// KeyAdmin/UpdateKey request. A field left nil stays unchanged.
public struct UpdateKeyRequest: WireMessage {
    public var id: String
    /// nil = unchanged.
    public var name: String?
    /// nil = unchanged; 0 clears the expiry.
    public var expiresAtMS: Int64?
    /// nil = unchanged; otherwise replaces the whole set.
    public var permissions: PermissionSet?

    public init(id: String = "", name: String? = nil, expiresAtMS: Int64? = nil, permissions: PermissionSet? = nil) {
        self.id = id
        self.name = name
        self.expiresAtMS = expiresAtMS
        self.permissions = permissions
    }

    public init() { self.init(id: "") }

    public static let codec = WireCodec<UpdateKeyRequest>(
        "apikeys.v1.UpdateKeyRequest",
        initialize: apikeys__v1__update_key_request__init,
        unpack: apikeys__v1__update_key_request__unpack,
        read: { c, arena in
            let message = "apikeys.v1.UpdateKeyRequest"
            var request = UpdateKeyRequest(id: try arena.string(c.id, field: "id", of: message))
            if c.name_opt_case == APIKEYS__V1__UPDATE_KEY_REQUEST__NAME_OPT_NAME {
                request.name = try arena.string(c.name, field: "name", of: message)
            }
            if c.expires_at_ms_opt_case == APIKEYS__V1__UPDATE_KEY_REQUEST__EXPIRES_AT_MS_OPT_EXPIRES_AT_MS {
                request.expiresAtMS = c.expires_at_ms
            }
            if c.permissions != nil {
                request.permissions = try arena.message(c.permissions) as PermissionSet
            }
            return request
        },
        write: { value, c, arena in
            let message = "apikeys.v1.UpdateKeyRequest"
            c.id = try arena.cString(value.id, field: "id", of: message)
            if let name = value.name {
                c.name_opt_case = APIKEYS__V1__UPDATE_KEY_REQUEST__NAME_OPT_NAME
                c.name = try arena.cString(name, field: "name", of: message)
            }
            if let expiresAtMS = value.expiresAtMS {
                c.expires_at_ms_opt_case = APIKEYS__V1__UPDATE_KEY_REQUEST__EXPIRES_AT_MS_OPT_EXPIRES_AT_MS
                c.expires_at_ms = expiresAtMS
            }
            if let permissions = value.permissions {
                c.permissions = try arena.make(permissions, as: Apikeys__V1__PermissionSet.self)
            }
        }
    )
}

/// KeyAdmin/UpdateKey reply.
public struct UpdateKeyResponse: WireMessage {
    public var key: ApiKey
    public init(key: ApiKey = ApiKey()) { self.key = key }
    public init() { self.init(key: ApiKey()) }

    public static let codec = WireCodec<UpdateKeyResponse>(
        key: "apikeys.v1.UpdateKeyResponse",
        initialize: apikeys__v1__update_key_response__init,
        unpack: apikeys__v1__update_key_response__unpack,
        field: \.key, get: \.key, make: { UpdateKeyResponse(key: $0) })
}
