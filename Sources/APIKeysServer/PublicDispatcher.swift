import APIKeysCore
import APIKeysStore
import APIKeysWire

/// Who makes an Authorize call that needs no admin token, and until when it may take effect.
struct PublicCallContext: Sendable {
    /// The IP address of the connection's peer.
    let peerAddress: String
    let deadline: Deadline
}

/// Authorize implemented on the key service, for the calls that run off the event loop:
/// ``ConnectionHandler`` answers Check itself from memory (``CheckCallCodec``), so only
/// ReportLeakedKey is routed here in practice; ``check(_:context:)`` is its equivalent.
struct PublicDispatcher: AuthorizeService {
    let service: KeyService

    func check(_ request: CheckRequest, context: PublicCallContext) async throws -> CheckResponse {
        CheckResponse(
            try service.check(
                secret: request.key, permissions: request.permissions, resource: request.resource,
                clientAddress: request.clientAddress))
    }

    func reportLeakedKey(_ request: ReportLeakedKeyRequest, context: PublicCallContext) async throws
        -> ReportLeakedKeyResponse
    {
        // The same answer whatever the outcome: a report must not tell whether the secret is a key.
        try await service.reportLeakedKey(
            secret: request.key, source: request.source, reporterAddress: context.peerAddress,
            deadline: context.deadline)
        return ReportLeakedKeyResponse()
    }
}
