import APIKeysCore
import APIKeysStore
import APIKeysWire

/// Who makes a KeyAdmin call and until when its mutation may commit.
public struct AdminCallContext: Sendable {
    /// The admin token's name (recorded as the actor of audit events) and its hash (checked again
    /// when a change commits).
    public let actor: AdminActor
    /// A mutation is not committed once it has passed.
    public let deadline: Deadline
}

/// KeyAdmin implemented on the key service. Every method is a requirement of the generated
/// ``KeyAdminService`` protocol and reached through ``KeyAdmin/router(for:)``: a method added to
/// proto/ does not compile until it is implemented here. Runs in a task, off the event loops (the
/// store does its blocking or remote work). Throws what the service throws;
/// ``RPCError/init(_:)`` turns it into a status.
public struct AdminDispatcher: KeyAdminService {
    let service: KeyService

    /// The methods that change keys: their commit checks the admin token again
    /// (``AdminActor/token``), so the token's name may be answered from memory before it. Every
    /// other method, one added later included, reads the store to authenticate.
    static let changesRecheckedAtCommit: Set<String> = [
        KeyAdmin.createKey.path, KeyAdmin.updateKey.path, KeyAdmin.setKeyEnabled.path, KeyAdmin.rotateKey.path,
        KeyAdmin.deleteKey.path,
    ]

    /// The scope each method needs, checked before anything is read or changed. A method not
    /// listed, one added later included, needs `admin`.
    static let requiredScopes: [String: AdminGrant.Scope] = [
        KeyAdmin.getKey.path: .read, KeyAdmin.listKeys.path: .read, KeyAdmin.listPermissions.path: .read,
        KeyAdmin.listAuditEvents.path: .read, KeyAdmin.getPolicy.path: .read, KeyAdmin.exportAuditChain.path: .read,
        KeyAdmin.whoAmI.path: .read,
        // The admin API's /v1/check (the RPC port answers Check without an admin token).
        Authorize.check.path: .read,
        KeyAdmin.createKey.path: .keys, KeyAdmin.updateKey.path: .keys, KeyAdmin.setKeyEnabled.path: .keys,
        KeyAdmin.rotateKey.path: .keys, KeyAdmin.deleteKey.path: .keys,
    ]

    public func createKey(_ request: CreateKeyRequest, context: AdminCallContext) async throws -> CreateKeyResponse {
        let issued = try await service.createKey(
            name: request.name, permissions: request.permissions, expiresAtMS: request.expiresAtMS,
            allowedNetworks: request.allowedNetworks,
            rateLimit: request.hasRateLimit ? KeyRateLimit(request.rateLimit) : nil, uses: request.remainingUses,
            actor: context.actor, deadline: context.deadline)
        return CreateKeyResponse(key: ApiKey(issued.key), secret: issued.secret)
    }

    public func getKey(_ request: GetKeyRequest, context: AdminCallContext) async throws -> GetKeyResponse {
        GetKeyResponse(key: ApiKey(try await service.getKey(id: request.id)))
    }

    public func listKeys(_ request: ListKeysRequest, context: AdminCallContext) async throws -> ListKeysResponse {
        let page = try await service.listKeys(pageSize: Int(request.pageSize), pageToken: request.pageToken)
        return ListKeysResponse(keys: page.keys.map(ApiKey.init), nextPageToken: page.nextPageToken ?? "")
    }

    public func updateKey(_ request: UpdateKeyRequest, context: AdminCallContext) async throws -> UpdateKeyResponse {
        let key = try await service.updateKey(
            id: request.id, name: request.name, expiresAtMS: request.expiresAtMS,
            permissions: request.hasPermissions ? request.permissions.names : nil,
            allowedNetworks: request.hasAllowedNetworks ? request.allowedNetworks.networks : nil,
            rateLimit: request.hasRateLimit ? KeyRateLimit(request.rateLimit) : nil,
            remainingUses: request.remainingUses, actor: context.actor, deadline: context.deadline)
        return UpdateKeyResponse(key: ApiKey(key))
    }

    public func setKeyEnabled(_ request: SetKeyEnabledRequest, context: AdminCallContext) async throws
        -> SetKeyEnabledResponse
    {
        let key = try await service.setEnabled(
            id: request.id, enabled: request.enabled, actor: context.actor, deadline: context.deadline)
        return SetKeyEnabledResponse(key: ApiKey(key))
    }

    public func rotateKey(_ request: RotateKeyRequest, context: AdminCallContext) async throws -> RotateKeyResponse {
        let issued = try await service.rotateKey(
            id: request.id, graceSeconds: Int64(request.graceSeconds), actor: context.actor, deadline: context.deadline)
        return RotateKeyResponse(key: ApiKey(issued.key), secret: issued.secret)
    }

    public func deleteKey(_ request: DeleteKeyRequest, context: AdminCallContext) async throws -> DeleteKeyResponse {
        try await service.deleteKey(id: request.id, actor: context.actor, deadline: context.deadline)
        return DeleteKeyResponse()
    }

    public func listPermissions(_ request: ListPermissionsRequest, context: AdminCallContext) async throws
        -> ListPermissionsResponse
    {
        ListPermissionsResponse(
            permissions: service.catalog.entries.map { Permission(name: $0.name, description: $0.description) })
    }

    public func listAuditEvents(_ request: ListAuditEventsRequest, context: AdminCallContext) async throws
        -> ListAuditEventsResponse
    {
        let page = try await service.listAuditEvents(
            try Self.query(request), pageSize: Int(request.pageSize), pageToken: request.pageToken)
        let retention = try await service.auditRetention()
        return ListAuditEventsResponse(
            events: page.events.map(AuditEvent.init), nextPageToken: page.nextPageToken ?? "",
            oldestRetainedAtMS: retention.oldestRetainedAtMS ?? 0, retentionMS: retention.retentionMS)
    }

    public func exportAuditChain(_ request: ExportAuditChainRequest, context: AdminCallContext) async throws
        -> ExportAuditChainResponse
    {
        let page = try await service.auditChainPage(
            after: request.afterPosition, sinceMS: request.sinceMS == 0 ? nil : request.sinceMS,
            pageSize: Int(request.pageSize))
        return ExportAuditChainResponse(page)
    }

    public func getPolicy(_ request: GetPolicyRequest, context: AdminCallContext) async throws -> GetPolicyResponse {
        GetPolicyResponse(maxKeyLifetimeMS: service.maxKeyLifetimeMS ?? 0)
    }

    public func createAdminToken(_ request: CreateAdminTokenRequest, context: AdminCallContext) async throws
        -> CreateAdminTokenResponse
    {
        guard let scope = AdminGrant.Scope(request.scope) else {
            throw RPCError(.invalidArgument, "scope: one of READ, KEYS or ADMIN")
        }
        let grant = AdminGrant(
            scope: scope, ceiling: request.ceiling.isEmpty ? nil : Set(request.ceiling),
            maxKeyLifetimeMS: request.maxKeyLifetimeMS == 0 ? nil : request.maxKeyLifetimeMS,
            expiresAtMS: request.expiresAtMS == 0 ? nil : request.expiresAtMS)
        let issued = try await service.issueAdminToken(name: request.name, grant: grant, actor: context.actor)
        return CreateAdminTokenResponse(token: AdminToken(issued.token), secret: issued.secret)
    }

    public func listAdminTokens(_ request: ListAdminTokensRequest, context: AdminCallContext) async throws
        -> ListAdminTokensResponse
    {
        try context.actor.require(.admin, for: "ListAdminTokens")
        return ListAdminTokensResponse(tokens: try await service.adminTokens().map(AdminToken.init))
    }

    public func revokeAdminToken(_ request: RevokeAdminTokenRequest, context: AdminCallContext) async throws
        -> RevokeAdminTokenResponse
    {
        guard try await service.revokeAdminToken(name: request.name, actor: context.actor) else {
            throw KeyError(
                code: .adminTokenNotFound, field: "name", description: "no admin token is named \"\(request.name)\"")
        }
        return RevokeAdminTokenResponse()
    }

    public func whoAmI(_ request: WhoAmIRequest, context: AdminCallContext) async throws -> WhoAmIResponse {
        let name = context.actor.name
        guard let token = try await service.adminTokens().first(where: { $0.name == name }) else {
            throw KeyError.adminTokenNotValid
        }
        return WhoAmIResponse(token: AdminToken(token))
    }

    private static func query(_ request: ListAuditEventsRequest) throws -> AuditQuery {
        var action: AuditAction?
        if !request.action.isEmpty {
            guard let known = AuditAction(rawValue: request.action) else {
                let actions = AuditAction.allCases.map(\.rawValue).joined(separator: ", ")
                throw RPCError(.invalidArgument, "action: \"\(request.action)\" is not one of \(actions)")
            }
            action = known
        }
        return AuditQuery(
            keyID: request.keyID.isEmpty ? nil : request.keyID, action: action,
            sinceMS: request.sinceMS == 0 ? nil : request.sinceMS, untilMS: request.untilMS == 0 ? nil : request.untilMS
        )
    }
}
