public import APIKeysWire

/// Admin tokens over the wire (scope `admin`), and the calling token itself (any scope).
extension APIKeysClient {
    /// Creates an admin token (its secret in the reply, shown this once). `scope`: `.read`,
    /// `.keys` or `.admin`; for `.keys`, `ceiling` (the only permissions its keys may hold; empty:
    /// any) and `maxKeyLifetime` (keys it creates or extends must expire within it); `expiresAtMS`
    /// (0: never). The calling token needs scope `admin` and cannot give more than it holds.
    public func createAdminToken(
        name: String, scope: AdminScope, ceiling: [String] = [], maxKeyLifetime: Duration? = nil,
        expiresAtMS: Int64 = 0, timeout: Duration? = nil
    ) async throws -> CreateAdminTokenResponse {
        let lifetimeMS = maxKeyLifetime.map { Int64($0.components.seconds) * 1000 } ?? 0
        return try await call(
            KeyAdmin.createAdminToken,
            CreateAdminTokenRequest(
                name: name, scope: scope, ceiling: ceiling, maxKeyLifetimeMS: lifetimeMS, expiresAtMS: expiresAtMS),
            timeout: timeout)
    }

    /// The admin tokens, oldest first (never their secrets).
    public func listAdminTokens(timeout: Duration? = nil) async throws -> [AdminToken] {
        try await call(KeyAdmin.listAdminTokens, ListAdminTokensRequest(), timeout: timeout).tokens
    }

    /// Revokes the admin token `name`: from the moment this returns, no call made with it
    /// succeeds, on any replica. NOT_FOUND when there is none.
    public func revokeAdminToken(name: String, timeout: Duration? = nil) async throws {
        _ = try await call(KeyAdmin.revokeAdminToken, RevokeAdminTokenRequest(name: name), timeout: timeout)
    }

    /// The calling admin token: its name, scope, ceiling, key lifetime and expiry.
    public func whoAmI(timeout: Duration? = nil) async throws -> AdminToken {
        try await call(KeyAdmin.whoAmI, WhoAmIRequest(), timeout: timeout).token
    }
}
