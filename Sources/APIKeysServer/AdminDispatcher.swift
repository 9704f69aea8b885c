import APIKeysCore
import APIKeysStore
import APIKeysWire

/// Runs one KeyAdmin call against the key service: decode the request, call, encode the reply.
/// Blocking (SQLite), so it runs on the server's thread pool, never on an event loop.
struct AdminDispatcher: Sendable {
    let service: KeyService

    /// The serialized reply to `method` with `payload`, made by `actor`; a mutation is not
    /// committed once `deadline` has passed. Throws what the service throws;
    /// ``RPCError/init(_:)`` turns it into a status.
    func handle(_ method: Method, payload: [UInt8], actor: String, deadline: Deadline) throws -> [UInt8] {
        switch method {
        case .createKey:
            let request = try CreateKeyRequest(serializedBytes: payload)
            let issued = try service.createKey(
                name: request.name, permissions: request.permissions, expiresAtMS: request.expiresAtMS, actor: actor,
                deadline: deadline)
            return try CreateKeyResponse(key: ApiKey(issued.key), secret: issued.secret).serializedBytes()
        case .getKey:
            let request = try GetKeyRequest(serializedBytes: payload)
            return try GetKeyResponse(key: ApiKey(service.getKey(id: request.id))).serializedBytes()
        case .listKeys:
            let request = try ListKeysRequest(serializedBytes: payload)
            let page = try service.listKeys(pageSize: Int(request.pageSize), pageToken: request.pageToken)
            return try ListKeysResponse(keys: page.keys.map(ApiKey.init), nextPageToken: page.nextPageToken ?? "")
                .serializedBytes()
        case .updateKey:
            let request = try UpdateKeyRequest(serializedBytes: payload)
            let key = try service.updateKey(
                id: request.id, name: request.name, expiresAtMS: request.expiresAtMS,
                permissions: request.permissions?.names, actor: actor, deadline: deadline)
            return try UpdateKeyResponse(key: ApiKey(key)).serializedBytes()
        case .setKeyEnabled:
            let request = try SetKeyEnabledRequest(serializedBytes: payload)
            let key = try service.setEnabled(id: request.id, enabled: request.enabled, actor: actor, deadline: deadline)
            return try SetKeyEnabledResponse(key: ApiKey(key)).serializedBytes()
        case .rotateKey:
            let request = try RotateKeyRequest(serializedBytes: payload)
            let issued = try service.rotateKey(id: request.id, actor: actor, deadline: deadline)
            return try RotateKeyResponse(key: ApiKey(issued.key), secret: issued.secret).serializedBytes()
        case .deleteKey:
            let request = try DeleteKeyRequest(serializedBytes: payload)
            try service.deleteKey(id: request.id, actor: actor, deadline: deadline)
            return try DeleteKeyResponse().serializedBytes()
        case .listPermissions:
            _ = try ListPermissionsRequest(serializedBytes: payload)
            let permissions = service.catalog.entries.map { Permission(name: $0.name, description: $0.description) }
            return try ListPermissionsResponse(permissions: permissions).serializedBytes()
        case .listAuditEvents:
            let request = try ListAuditEventsRequest(serializedBytes: payload)
            let page = try service.listAuditEvents(
                try Self.query(request), pageSize: Int(request.pageSize), pageToken: request.pageToken)
            let retention = try service.auditRetention()
            return try ListAuditEventsResponse(
                events: page.events.map(AuditEvent.init), nextPageToken: page.nextPageToken ?? "",
                oldestRetainedAtMS: retention.oldestRetainedAtMS ?? 0, retentionMS: retention.retentionMS
            )
            .serializedBytes()
        case .check:
            throw RPCError(.internal, "Check is not a KeyAdmin call")
        }
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
