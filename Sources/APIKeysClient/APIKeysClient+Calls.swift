public import APIKeysWire
import APIKeysCore

extension APIKeysClient {
    /// Creates a key. The reply holds the secret, shown this once.
    public func createKey(name: String, permissions: [String], expiresAtMS: Int64 = 0) async throws -> CreateKeyResponse {
        try await call(.createKey, CreateKeyRequest(name: name, permissions: permissions, expiresAtMS: expiresAtMS))
    }

    /// The key with `id`.
    public func getKey(id: String) async throws -> ApiKey {
        try await call(.getKey, GetKeyRequest(id: id), as: GetKeyResponse.self).key
    }

    /// One page of keys, oldest first.
    public func listKeys(pageSize: UInt32 = 0, pageToken: String = "") async throws -> ListKeysResponse {
        try await call(.listKeys, ListKeysRequest(pageSize: pageSize, pageToken: pageToken))
    }

    /// Changes the fields that are set in `request`; the others stay.
    public func updateKey(_ request: UpdateKeyRequest) async throws -> ApiKey {
        try await call(.updateKey, request, as: UpdateKeyResponse.self).key
    }

    /// Enables or disables a key.
    public func setKeyEnabled(id: String, enabled: Bool) async throws -> ApiKey {
        try await call(.setKeyEnabled, SetKeyEnabledRequest(id: id, enabled: enabled), as: SetKeyEnabledResponse.self).key
    }

    /// Gives a key a new secret (in the reply, shown this once); the old one stops working at once.
    public func rotateKey(id: String) async throws -> RotateKeyResponse {
        try await call(.rotateKey, RotateKeyRequest(id: id))
    }

    /// Deletes a key for good.
    public func deleteKey(id: String) async throws {
        _ = try await call(.deleteKey, DeleteKeyRequest(id: id), as: DeleteKeyResponse.self)
    }

    /// The permission catalog.
    public func listPermissions() async throws -> [Permission] {
        try await call(.listPermissions, ListPermissionsRequest(), as: ListPermissionsResponse.self).permissions
    }

    /// One page of audit events, newest first.
    public func listAuditEvents(_ request: ListAuditEventsRequest = ListAuditEventsRequest()) async throws
        -> ListAuditEventsResponse
    {
        try await call(.listAuditEvents, request)
    }

    /// Asks whether `key` is valid and holds every one of `permissions`. A malformed key is
    /// answered here, without a network call. A denial is a normal answer, not an error.
    public func check(
        key: String, permissions: [String] = [], resource: String = "", clientAddress: String = ""
    ) async throws -> CheckResponse {
        let secret = key.hasPrefix("Bearer ") ? String(key.dropFirst("Bearer ".count)) : key
        if let secretFormat, !secretFormat.isWellFormed(secret) {
            return CheckResponse(decision: .deny, reason: .malformedKey, httpStatus: 401)
        }
        return try await call(
            .check, CheckRequest(key: key, permissions: permissions, resource: resource, clientAddress: clientAddress))
    }
}
