/// Every RPC of the contract, by its full method path as carried in ``Envelope/method``.
public enum Method: String, CaseIterable, Sendable {
    case createKey = "/apikeys.v1.KeyAdmin/CreateKey"
    case getKey = "/apikeys.v1.KeyAdmin/GetKey"
    case listKeys = "/apikeys.v1.KeyAdmin/ListKeys"
    case updateKey = "/apikeys.v1.KeyAdmin/UpdateKey"
    case setKeyEnabled = "/apikeys.v1.KeyAdmin/SetKeyEnabled"
    case rotateKey = "/apikeys.v1.KeyAdmin/RotateKey"
    case deleteKey = "/apikeys.v1.KeyAdmin/DeleteKey"
    case listPermissions = "/apikeys.v1.KeyAdmin/ListPermissions"
    case listAuditEvents = "/apikeys.v1.KeyAdmin/ListAuditEvents"
    case check = "/apikeys.v1.Authorize/Check"

    /// True for the KeyAdmin service, whose calls need an admin token.
    public var isKeyAdmin: Bool { self != .check }
}

/// Envelope metadata keys.
public enum MetadataKey {
    /// `Bearer <admin token>`, required on KeyAdmin calls.
    public static let authorization = "authorization"
}
