import APIKeysWire

/// Sample values of every message type, with the edge cases the contract cares about.
enum Fixtures {
    static let unicode = "clé Ünïcødé ✓ 鍵 🔑"
    static let apiKey = ApiKey(
        id: "key_0123456789abcdef", name: unicode, hint: "dbm_AbC1…", permissions: ["jobs:read", "vault:read"],
        enabled: true, createdAtMS: 1_700_000_000_000, updatedAtMS: 1_700_000_000_001,
        expiresAtMS: 1_900_000_000_000, lastUsedAtMS: -1, rotatedAtMS: Int64.max,
        allowedNetworks: ["10.0.0.0/8", "2001:db8::/32"], graceEndsAtMS: 1_700_000_600_000,
        rateLimit: RateLimit(requests: UInt32.max, periodSeconds: 86400, burst: 0), remainingUses: 0)
    static let auditEvent = AuditEvent(
        seq: UInt64.max, atMS: 1_700_000_000_123, action: "api.request", trigger: "api", keyID: "key_1",
        keyName: "ci", actor: "", detail: "", decision: .deny, reason: .missingPermission,
        permissions: ["jobs:write"], resource: "POST /api/jobs/42/run", clientAddress: "10.0.0.7")

    /// Every message type, each as a few values; the round-trip and fuzz tests run over all of them.
    static let all: [any WireMessage] = [
        Envelope(),
        Envelope(
            callID: UInt64.max, method: KeyAdmin.createKey.path, payload: [0, 1, 0, 255, 0],
            status: .unauthenticated, statusMessage: unicode,
            metadata: ["authorization": "Bearer abc", "x-empty": ""], timeoutMS: 1500),
        ApiKey(), apiKey,
        CreateKeyRequest(), CreateKeyRequest(name: unicode, permissions: ["jobs:read"], expiresAtMS: 42),
        CreateKeyResponse(), CreateKeyResponse(key: apiKey, secret: "dbm_secret"),
        GetKeyRequest(), GetKeyRequest(id: "key_1"), GetKeyResponse(key: apiKey),
        ListKeysRequest(), ListKeysRequest(pageSize: UInt32.max, pageToken: "tok"),
        ListKeysResponse(), ListKeysResponse(keys: Array(repeating: apiKey, count: 300), nextPageToken: "next"),
        PermissionSet(), PermissionSet(names: ["a", ""]),
        UpdateKeyRequest(), UpdateKeyRequest(id: "key_1"),
        UpdateKeyRequest(id: "key_1", name: "", expiresAtMS: 0, permissions: PermissionSet()),
        UpdateKeyRequest(id: "key_1", name: "new", expiresAtMS: 5, permissions: PermissionSet(names: ["jobs:read"])),
        UpdateKeyResponse(key: apiKey),
        SetKeyEnabledRequest(), SetKeyEnabledRequest(id: "k", enabled: true), SetKeyEnabledResponse(key: apiKey),
        RotateKeyRequest(id: "k"), RotateKeyRequest(id: "k", graceSeconds: UInt32.max), RotateKeyResponse(),
        RotateKeyResponse(key: apiKey, secret: "s"),
        DeleteKeyRequest(id: "k"), DeleteKeyResponse(),
        ListPermissionsRequest(), ListPermissionsResponse(),
        ListPermissionsResponse(permissions: [Permission(name: "jobs:read", description: "Read jobs")]),
        Permission(), ListAuditEventsRequest(),
        ListAuditEventsRequest(
            keyID: "k", action: "key.created", sinceMS: -5, untilMS: 9, pageSize: 10, pageToken: "t"),
        ListAuditEventsResponse(), ListAuditEventsResponse(events: [auditEvent, AuditEvent()], nextPageToken: "n"),
        AuditEvent(), auditEvent,
        AuditEvent(decision: .unrecognized(77), reason: .unrecognized(-3)),
        CheckRequest(),
        CheckRequest(
            key: "Bearer dbm_x", permissions: Array(repeating: "jobs:read", count: 10_000),
            resource: "GET /", clientAddress: "::1"),
        CheckResponse(),
        CheckResponse(
            decision: .deny, reason: .missingPermission, httpStatus: 403, keyID: "k", keyName: unicode,
            missingPermissions: ["vault:read"], expiresAtMS: 3),
        ReportLeakedKeyRequest(), ReportLeakedKeyRequest(key: "dbm_x", source: unicode), ReportLeakedKeyResponse(),
        GetPolicyRequest(), GetPolicyResponse(), GetPolicyResponse(maxKeyLifetimeMS: -1),
        NetworkList(), NetworkList(networks: ["::/0", unicode]),
        UpdateKeyRequest(id: "k", allowedNetworks: NetworkList()),
        RateLimit(), RateLimit(requests: 100, periodSeconds: 1, burst: 200),
        UpdateKeyRequest(id: "k", rateLimit: RateLimit()), UpdateKeyRequest(id: "k", remainingUses: -1),
        CreateKeyRequest(name: "n", remainingUses: Int64.max),
        CheckResponse(decision: .deny, reason: .usageExceeded, httpStatus: 403),
        CheckResponse(decision: .deny, reason: .rateLimited, httpStatus: 429, retryAfterMS: Int64.max),
        ExportAuditChainRequest(), ExportAuditChainRequest(afterPosition: .max, sinceMS: -1, pageSize: .max),
        ExportAuditChainResponse(), AuditChainState(), AuditChainPoint(),
        AuditLink(position: 1, previousHash: [], hash: Array(repeating: 0xFF, count: 32), events: [auditEvent]),
        AdminToken(), AdminToken(name: unicode, scope: .unrecognized(99), ceiling: ["", unicode], expiresAtMS: -1),
        CreateAdminTokenRequest(), CreateAdminTokenRequest(name: "n", scope: .admin, maxKeyLifetimeMS: .max),
        CreateAdminTokenResponse(), CreateAdminTokenResponse(token: AdminToken(scope: .keys), secret: "adm_x"),
        ListAdminTokensRequest(), ListAdminTokensResponse(), ListAdminTokensResponse(tokens: [AdminToken()]),
        RevokeAdminTokenRequest(), RevokeAdminTokenRequest(name: unicode), RevokeAdminTokenResponse(),
        WhoAmIRequest(), WhoAmIResponse(), WhoAmIResponse(token: AdminToken(scope: .read)),
    ]
}
