internal import CAPIKeysProto

/// A permission of the catalog.
public struct Permission: WireMessage {
    /// e.g. `jobs:read`.
    public var name: String
    /// One line saying what it allows.
    public var description: String

    public init(name: String = "", description: String = "") {
        self.name = name
        self.description = description
    }

    public init() { self.init(name: "") }

    public static let codec = WireCodec<Permission>(
        "apikeys.v1.Permission",
        initialize: apikeys__v1__permission__init,
        unpack: apikeys__v1__permission__unpack,
        read: { c, arena in
            Permission(
                name: try arena.string(c.name, field: "name", of: "apikeys.v1.Permission"),
                description: try arena.string(c.description, field: "description", of: "apikeys.v1.Permission"))
        },
        write: { value, c, arena in
            c.name = try arena.cString(value.name, field: "name", of: "apikeys.v1.Permission")
            c.description = try arena.cString(value.description, field: "description", of: "apikeys.v1.Permission")
        }
    )
}

/// KeyAdmin/ListPermissions request (empty).
public struct ListPermissionsRequest: WireMessage {
    public init() {}

    public static let codec = WireCodec<ListPermissionsRequest>(
        empty: "apikeys.v1.ListPermissionsRequest",
        initialize: apikeys__v1__list_permissions_request__init,
        unpack: apikeys__v1__list_permissions_request__unpack,
        value: { ListPermissionsRequest() })
}

/// KeyAdmin/ListPermissions reply: the catalog.
public struct ListPermissionsResponse: WireMessage {
    public var permissions: [Permission]
    public init(permissions: [Permission] = []) { self.permissions = permissions }
    public init() { self.init(permissions: []) }

    public static let codec = WireCodec<ListPermissionsResponse>(
        "apikeys.v1.ListPermissionsResponse",
        initialize: apikeys__v1__list_permissions_response__init,
        unpack: apikeys__v1__list_permissions_response__unpack,
        read: { c, arena in
            ListPermissionsResponse(permissions: try arena.messages(c.permissions, count: c.n_permissions))
        },
        write: { value, c, arena in
            (c.n_permissions, c.permissions) = try arena.makeArray(value.permissions, as: Apikeys__V1__Permission.self)
        }
    )
}
