import APIKeysCore
import APIKeysStore
import APIKeysWire
import Logging

/// The one way into KeyAdmin, for every admin surface (the RPC port, the HTTP admin API): the
/// bearer's admin token is authenticated, its scope checked before anything is read or
/// changed, a refusal recorded in the audit trail, and the call run with the token as actor.
public struct AdminGate: Sendable {
    let service: KeyService
    /// KeyAdmin's methods on the key service.
    public let dispatcher: AdminDispatcher
    let logger: Logger

    init(service: KeyService, logger: Logger) {
        self.service = service
        self.dispatcher = AdminDispatcher(service: service)
        self.logger = logger
    }

    /// Runs `call` as `method` for the bearer of `authorization` (`Bearer adm_…`; nil or
    /// anything else is UNAUTHENTICATED). Throws an ``RPCError`` (``APIKeysServer/failure(of:during:)`` says how to answer it): the
    /// call's own error, or why it was refused. `deadline` counts from the request's arrival;
    /// `logger` (the connection's, with its peer) logs the outcome.
    public func run<Result>(
        _ method: any RPCMethodDescriptor, authorization: String?, deadline: Deadline, logger: Logger? = nil,
        _ call: (AdminCallContext) async throws -> Result
    ) async throws -> Result {
        let logger = logger ?? self.logger
        try deadline.check()
        let token = Self.bearerToken(authorization)
        let recheckedAtCommit = AdminDispatcher.changesRecheckedAtCommit.contains(method.path)
        guard let token,
            let actor = try await service.authenticate(adminToken: token, recheckedAtCommit: recheckedAtCommit)
        else {
            throw RPCError(
                .unauthenticated,
                token == nil
                    ? "KeyAdmin calls need \"authorization: Bearer <admin token>\"" : "the admin token is not valid"
            )
        }
        do {
            // The scope first: a call outside it reads and changes nothing.
            try actor.require(AdminDispatcher.requiredScopes[method.path] ?? .admin, for: method.name)
            let result = try await call(AdminCallContext(actor: actor, deadline: deadline))
            logger.info("admin call", metadata: ["method": "\(method.path)", "actor": "\(actor.name)"])
            return result
        } catch {
            if let refusal = error as? KeyError, refusal.code == .permissionDenied {
                service.recordPermissionDenied(actor: actor, method: method.name, why: refusal.description)
            }
            let status = RPCError(error)
            logger.info(
                "admin call failed",
                metadata: ["method": "\(method.path)", "actor": "\(actor.name)", "status": "\(status.code)"])
            throw status
        }
    }

    /// A Check, answered as the RPC port answers it (the admin API's `/v1/check`; run it inside
    /// ``run(_:authorization:deadline:logger:_:)`` with `Authorize.check`, which needs scope `read`).
    public func check(_ request: CheckRequest) throws -> CheckResponse {
        CheckResponse(
            try service.check(
                secret: request.key, permissions: request.permissions, resource: request.resource,
                clientAddress: request.clientAddress))
    }

    /// The hash of the admin token `authorization` presents when this server has seen it valid
    /// (``KeyService/knownAdminTokenHash(_:)``), else nil: from memory, no store read. Not
    /// authentication.
    public func knownAdminToken(_ authorization: String) -> SecretHash? {
        Self.bearerToken(authorization).flatMap(service.knownAdminTokenHash)
    }

    /// The token of an `authorization: Bearer <token>` value.
    private static func bearerToken(_ value: String?) -> String? {
        guard let value, value.hasPrefix(SecretFormat.bearerScheme) else { return nil }
        return String(value.dropFirst(SecretFormat.bearerScheme.count))
    }
}
