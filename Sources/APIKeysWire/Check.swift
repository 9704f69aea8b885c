internal import CAPIKeysProto

/// Authorize/Check request: is this key valid, and does it hold these permissions?
public struct CheckRequest: WireMessage {
    /// The raw API key; a leading `Bearer ` is accepted.
    public var key: String
    /// Permissions needed; all must be granted. Empty = authenticate only.
    public var permissions: [String]
    /// What the caller is about to do, for the audit trail.
    public var resource: String
    /// The end client's address, for the audit trail.
    public var clientAddress: String

    public init(key: String = "", permissions: [String] = [], resource: String = "", clientAddress: String = "") {
        self.key = key
        self.permissions = permissions
        self.resource = resource
        self.clientAddress = clientAddress
    }

    public init() { self.init(key: "") }

    public static let codec = WireCodec<CheckRequest>(
        name, initialize: apikeys__v1__check_request__init, unpack: apikeys__v1__check_request__unpack, read: read,
        write: write)

    private static let name = "apikeys.v1.CheckRequest"

    /// The fields of an unpacked struct (also called directly by ``CheckCallCodec``).
    static func read(_ c: Apikeys__V1__CheckRequest, _ arena: Arena) throws -> CheckRequest {
        CheckRequest(
            key: try arena.string(c.key, field: "key", of: name),
            permissions: try arena.strings(c.permissions, count: c.n_permissions, field: "permissions", of: name),
            resource: try arena.string(c.resource, field: "resource", of: name),
            clientAddress: try arena.string(c.client_address, field: "client_address", of: name)
        )
    }

    static func write(_ value: CheckRequest, _ c: inout Apikeys__V1__CheckRequest, _ arena: Arena) throws {
        c.key = try arena.cString(value.key, field: "key", of: name)
        (c.n_permissions, c.permissions) = try arena.cStrings(value.permissions, field: "permissions", of: name)
        c.resource = try arena.cString(value.resource, field: "resource", of: name)
        c.client_address = try arena.cString(value.clientAddress, field: "client_address", of: name)
    }
}

/// Authorize/Check reply. A denial is a normal answer, not a call error.
public struct CheckResponse: WireMessage {
    public var decision: Decision
    public var reason: DenyReason
    /// 200, 401 or 403.
    public var httpStatus: UInt32
    public var keyID: String
    public var keyName: String
    /// With ``DenyReason/missingPermission``: what was asked for and not granted.
    public var missingPermissions: [String]
    /// The key's expiry in unix epoch milliseconds, 0 = never or unknown.
    public var expiresAtMS: Int64

    public init(
        decision: Decision = .unspecified, reason: DenyReason = .unspecified, httpStatus: UInt32 = 0,
        keyID: String = "", keyName: String = "", missingPermissions: [String] = [], expiresAtMS: Int64 = 0
    ) {
        self.decision = decision
        self.reason = reason
        self.httpStatus = httpStatus
        self.keyID = keyID
        self.keyName = keyName
        self.missingPermissions = missingPermissions
        self.expiresAtMS = expiresAtMS
    }

    public init() { self.init(decision: .unspecified) }

    public static let codec = WireCodec<CheckResponse>(
        name, initialize: apikeys__v1__check_response__init, unpack: apikeys__v1__check_response__unpack, read: read,
        write: write)

    private static let name = "apikeys.v1.CheckResponse"

    /// The fields of an unpacked struct (also called directly by ``CheckCallCodec``).
    static func read(_ c: Apikeys__V1__CheckResponse, _ arena: Arena) throws -> CheckResponse {
        CheckResponse(
            decision: Decision(c.decision),
            reason: DenyReason(c.reason),
            httpStatus: c.http_status,
            keyID: try arena.string(c.key_id, field: "key_id", of: name),
            keyName: try arena.string(c.key_name, field: "key_name", of: name),
            missingPermissions: try arena.strings(
                c.missing_permissions, count: c.n_missing_permissions, field: "missing_permissions", of: name),
            expiresAtMS: c.expires_at_ms
        )
    }

    /// Sets the fields of an initialised struct (also called directly by ``CheckCallCodec``).
    static func write(_ value: CheckResponse, _ c: inout Apikeys__V1__CheckResponse, _ arena: Arena) throws {
        c.decision = value.decision.cValue
        c.reason = value.reason.cValue
        c.http_status = value.httpStatus
        c.key_id = try arena.cString(value.keyID, field: "key_id", of: name)
        c.key_name = try arena.cString(value.keyName, field: "key_name", of: name)
        (c.n_missing_permissions, c.missing_permissions) = try arena.cStrings(
            value.missingPermissions, field: "missing_permissions", of: name)
        c.expires_at_ms = value.expiresAtMS
    }
}
