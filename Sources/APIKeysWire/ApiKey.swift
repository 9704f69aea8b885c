internal import CAPIKeysProto

/// An API key as the service describes it. It never carries the secret.
public struct ApiKey: WireMessage {
    /// Stable public id, unchanged by rotation.
    public var id: String
    public var name: String
    /// Identifies the key in lists without revealing it, e.g. `dbm_AbC1…`.
    public var hint: String
    public var permissions: [String]
    public var enabled: Bool
    public var createdAtMS: Int64
    public var updatedAtMS: Int64
    /// 0 = never expires.
    public var expiresAtMS: Int64
    /// 0 = never used.
    public var lastUsedAtMS: Int64
    /// 0 = never rotated.
    public var rotatedAtMS: Int64

    public init(
        id: String = "", name: String = "", hint: String = "", permissions: [String] = [], enabled: Bool = false,
        createdAtMS: Int64 = 0, updatedAtMS: Int64 = 0, expiresAtMS: Int64 = 0, lastUsedAtMS: Int64 = 0,
        rotatedAtMS: Int64 = 0
    ) {
        self.id = id
        self.name = name
        self.hint = hint
        self.permissions = permissions
        self.enabled = enabled
        self.createdAtMS = createdAtMS
        self.updatedAtMS = updatedAtMS
        self.expiresAtMS = expiresAtMS
        self.lastUsedAtMS = lastUsedAtMS
        self.rotatedAtMS = rotatedAtMS
    }

    public init() { self.init(id: "") }

    public static let codec = WireCodec<ApiKey>(
        "apikeys.v1.ApiKey",
        initialize: apikeys__v1__api_key__init,
        unpack: apikeys__v1__api_key__unpack,
        read: { c, arena in
            let name = "apikeys.v1.ApiKey"
            return ApiKey(
                id: try arena.string(c.id, field: "id", of: name),
                name: try arena.string(c.name, field: "name", of: name),
                hint: try arena.string(c.hint, field: "hint", of: name),
                permissions: try arena.strings(c.permissions, count: c.n_permissions, field: "permissions", of: name),
                enabled: c.enabled != 0,
                createdAtMS: c.created_at_ms,
                updatedAtMS: c.updated_at_ms,
                expiresAtMS: c.expires_at_ms,
                lastUsedAtMS: c.last_used_at_ms,
                rotatedAtMS: c.rotated_at_ms
            )
        },
        write: { value, c, arena in
            let name = "apikeys.v1.ApiKey"
            c.id = try arena.cString(value.id, field: "id", of: name)
            c.name = try arena.cString(value.name, field: "name", of: name)
            c.hint = try arena.cString(value.hint, field: "hint", of: name)
            (c.n_permissions, c.permissions) = try arena.cStrings(value.permissions, field: "permissions", of: name)
            c.enabled = value.enabled ? 1 : 0
            c.created_at_ms = value.createdAtMS
            c.updated_at_ms = value.updatedAtMS
            c.expires_at_ms = value.expiresAtMS
            c.last_used_at_ms = value.lastUsedAtMS
            c.rotated_at_ms = value.rotatedAtMS
        }
    )
}
