public import APIKeysWire
import APIKeysCore

/// Every call takes an optional `timeout`; without one, ``APIKeysClient/Configuration/timeout`` applies.
extension APIKeysClient {
    /// Creates a key. The reply holds the secret, shown this once. With `allowedNetworks` (CIDR),
    /// the key's checks must carry a client address in one of them; with `rateLimit`, each server
    /// allows its checks at most that often (beyond: RATE_LIMITED, 429); with `remainingUses`, the
    /// key is allowed that many checks in all (then USAGE_EXCEEDED, 403, until `updateKey` refills it).
    public func createKey(
        name: String, permissions: [String], expiresAtMS: Int64 = 0, allowedNetworks: [String] = [],
        rateLimit: RateLimit? = nil, remainingUses: Int64? = nil, timeout: Duration? = nil
    ) async throws -> CreateKeyResponse {
        try await call(
            KeyAdmin.createKey,
            CreateKeyRequest(
                name: name, permissions: permissions, expiresAtMS: expiresAtMS, allowedNetworks: allowedNetworks,
                rateLimit: rateLimit, remainingUses: remainingUses),
            timeout: timeout)
    }

    /// The key with `id`.
    public func getKey(id: String, timeout: Duration? = nil) async throws -> ApiKey {
        try await call(KeyAdmin.getKey, GetKeyRequest(id: id), timeout: timeout).key
    }

    /// One page of keys, oldest first.
    public func listKeys(pageSize: UInt32 = 0, pageToken: String = "", timeout: Duration? = nil) async throws
        -> ListKeysResponse
    {
        try await call(KeyAdmin.listKeys, ListKeysRequest(pageSize: pageSize, pageToken: pageToken), timeout: timeout)
    }

    /// Changes what is given of key `id` (nil: unchanged) and returns the key. `expiresAtMS` 0
    /// clears the expiry; `permissions` replaces the whole set (at least one); `allowedNetworks`
    /// replaces the allowlist (empty: from anywhere); `rateLimit` replaces the limit (`requests`
    /// 0: no limit); `remainingUses` refills the usage credits (-1: unlimited).
    public func updateKey(
        id: String, name: String? = nil, permissions: [String]? = nil, expiresAtMS: Int64? = nil,
        allowedNetworks: [String]? = nil, rateLimit: RateLimit? = nil, remainingUses: Int64? = nil,
        timeout: Duration? = nil
    ) async throws -> ApiKey {
        let request = UpdateKeyRequest(
            id: id, name: name, expiresAtMS: expiresAtMS, permissions: permissions.map { PermissionSet(names: $0) },
            allowedNetworks: allowedNetworks.map { NetworkList(networks: $0) }, rateLimit: rateLimit,
            remainingUses: remainingUses)
        return try await call(KeyAdmin.updateKey, request, timeout: timeout).key
    }

    /// Changes the fields that are set in `request`; the others stay.
    @available(
        *, deprecated,
        message: "use updateKey(id:name:permissions:expiresAtMS:allowedNetworks:rateLimit:remainingUses:)"
    )
    public func updateKey(_ request: UpdateKeyRequest, timeout: Duration? = nil) async throws -> ApiKey {
        try await call(KeyAdmin.updateKey, request, timeout: timeout).key
    }

    /// Enables or disables a key.
    public func setKeyEnabled(id: String, enabled: Bool, timeout: Duration? = nil) async throws -> ApiKey {
        try await call(KeyAdmin.setKeyEnabled, SetKeyEnabledRequest(id: id, enabled: enabled), timeout: timeout).key
    }

    /// Gives a key a new secret (in the reply, shown this once). The old one stops working at once,
    /// or, with a `grace` (whole seconds, at most 7 days), when that has passed: time for the
    /// key's users to switch (the key's `graceEndsAtMS` says until when).
    public func rotateKey(id: String, grace: Duration = .zero, timeout: Duration? = nil) async throws
        -> RotateKeyResponse
    {
        guard grace >= .zero else {
            throw APIKeysClientError(code: .invalidArgument, message: "grace must not be negative, not \(grace)")
        }
        // Beyond 7 days the server refuses it, with its message; UInt32.max seconds is beyond.
        let seconds = UInt32(clamping: grace.components.seconds)
        return try await call(KeyAdmin.rotateKey, RotateKeyRequest(id: id, graceSeconds: seconds), timeout: timeout)
    }

    /// Deletes a key for good.
    public func deleteKey(id: String, timeout: Duration? = nil) async throws {
        _ = try await call(KeyAdmin.deleteKey, DeleteKeyRequest(id: id), timeout: timeout)
    }

    /// The permission catalog.
    public func listPermissions(timeout: Duration? = nil) async throws -> [Permission] {
        try await call(KeyAdmin.listPermissions, ListPermissionsRequest(), timeout: timeout).permissions
    }

    /// The server's key policies (its maximum key lifetime).
    public func getPolicy(timeout: Duration? = nil) async throws -> GetPolicyResponse {
        try await call(KeyAdmin.getPolicy, GetPolicyRequest(), timeout: timeout)
    }

    /// One page of audit events, newest first: those of key `keyID` (empty: any), with `action`
    /// (empty: any), at or after `sinceMS` and before `untilMS` (0: unbounded). The reply's
    /// `nextPageToken` (empty on the last page) is the `pageToken` of the next call.
    public func listAuditEvents(
        keyID: String = "", action: String = "", sinceMS: Int64 = 0, untilMS: Int64 = 0, pageSize: UInt32 = 0,
        pageToken: String = "", timeout: Duration? = nil
    ) async throws -> ListAuditEventsResponse {
        let request = ListAuditEventsRequest(
            keyID: keyID, action: action, sinceMS: sinceMS, untilMS: untilMS, pageSize: pageSize, pageToken: pageToken)
        return try await call(KeyAdmin.listAuditEvents, request, timeout: timeout)
    }

    /// One page of audit events, as `request` asks.
    @available(*, deprecated, message: "use listAuditEvents(keyID:action:sinceMS:untilMS:pageSize:pageToken:)")
    public func listAuditEvents(_ request: ListAuditEventsRequest, timeout: Duration? = nil) async throws
        -> ListAuditEventsResponse
    {
        try await call(KeyAdmin.listAuditEvents, request, timeout: timeout)
    }

    /// Asks whether `key` is valid and holds every one of `permissions`. A malformed key is
    /// answered here, without a network call. A denial is a normal answer, not an error.
    public func check(
        key: String, permissions: [String] = [], resource: String = "", clientAddress: String = "",
        timeout: Duration? = nil
    ) async throws -> CheckResponse {
        if let secretFormat, !secretFormat.isWellFormed(presented: key) {
            return CheckResponse(decision: .deny, reason: .malformedKey, httpStatus: 401)
        }
        return try await call(
            Authorize.check,
            CheckRequest(key: key, permissions: permissions, resource: resource, clientAddress: clientAddress),
            timeout: timeout)
    }

    /// Reports a secret found where it should not be (`source`: where, e.g. a URL): the server
    /// disables its key at once. Needs no admin token; the answer is the same whether or not the
    /// secret was a key. Not retried on another replica (a second report is harmless, but
    /// recorded twice).
    public func reportLeakedKey(_ secret: String, source: String = "", timeout: Duration? = nil) async throws {
        _ = try await call(
            Authorize.reportLeakedKey, ReportLeakedKeyRequest(key: secret, source: source), timeout: timeout)
    }
}
