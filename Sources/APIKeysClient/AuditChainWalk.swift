import APIKeysCore
import APIKeysWire

extension APIKeysClient {
    /// One page of the audit trail's hash chain (whole links with their events): the links
    /// after position `afterPosition` or, when that is 0 and `sinceMS` is set, from the first
    /// link holding an event at or after `sinceMS`.
    public func exportAuditChain(
        afterPosition: UInt64 = 0, sinceMS: Int64 = 0, pageSize: UInt32 = 0, timeout: Duration? = nil
    ) async throws -> ExportAuditChainResponse {
        let request = ExportAuditChainRequest(afterPosition: afterPosition, sinceMS: sinceMS, pageSize: pageSize)
        return try await call(KeyAdmin.exportAuditChain, request, timeout: timeout)
    }

    /// One page of the audit trail's hash chain, as `request` asks.
    @available(*, deprecated, message: "use exportAuditChain(afterPosition:sinceMS:pageSize:)")
    public func exportAuditChain(_ request: ExportAuditChainRequest, timeout: Duration? = nil) async throws
        -> ExportAuditChainResponse
    {
        try await call(KeyAdmin.exportAuditChain, request, timeout: timeout)
    }

    /// Reads the chain page by page, from its anchor (or from the first link with an event at or
    /// after `sinceMS`) to the head it had when the walk began, handing each page to `onPage`
    /// (links past that head left out) and verifying every link against the one before it
    /// (``AuditChainVerifier``). Throws ``AuditChainVerifier/Break`` at the first break, after
    /// `onPage` has seen its page.
    @discardableResult
    public func verifyAuditChain(
        sinceMS: Int64 = 0, pageSize: UInt32 = 0, timeout: Duration? = nil,
        onPage: (AuditChain.State, [AuditLink]) async throws -> Void = { _, _ in }
    ) async throws -> AuditChainVerification {
        try await AuditChainVerifier.walk(
            page: { after in
                // The first page from `sinceMS`, the next ones after the last link read.
                let page = try await exportAuditChain(
                    afterPosition: after ?? 0, sinceMS: after == nil ? sinceMS : 0, pageSize: pageSize,
                    timeout: timeout)
                return (AuditChain.State(page.chain), page.links)
            },
            reading: { link in
                AuditChainVerifier.Reading(
                    position: link.position, hash: link.hash, entries: link.events.map(AuditChain.Entry.init),
                    prunedFrom: link.prunedFrom == 0 ? nil : link.prunedFrom)
            },
            start: { state, first in try Self.start(sinceMS: sinceMS, state: state, first: first) },
            onPage: onPage)
    }

    /// Where a walk starts: the anchor for the whole chain; for a partial one, the point before
    /// its first link, which the server must still keep.
    private static func start(sinceMS: Int64, state: AuditChain.State, first: AuditLink?) throws
        -> AuditChainVerifier
    {
        guard sinceMS != 0, let first, first.position != state.anchor.position + 1 else {
            return AuditChainVerifier(from: state.anchor)
        }
        guard first.previousHash.count == 32 else {
            throw AuditChainVerifier.Break(position: first.position, reason: "the link before it is not kept")
        }
        return AuditChainVerifier(from: AuditChain.Point(position: first.position - 1, hash: first.previousHash))
    }
}

extension AuditChain.State {
    init(_ state: AuditChainState) {
        self.init(
            anchor: AuditChain.Point(position: state.anchor.position, hash: state.anchor.hash),
            head: AuditChain.Point(position: state.head.position, hash: state.head.hash))
    }
}

extension AuditChain.Entry {
    /// The digested fields of an exported event.
    public init(_ event: AuditEvent) {
        let reason: UInt32 =
            switch event.reason {
            case .unspecified: 0
            default: UInt32(bitPattern: event.reason.rawValue)
            }
        self.init(
            seq: event.seq, atMS: event.atMS, action: event.action, keyID: event.keyID, keyName: event.keyName,
            actor: event.actor, detail: event.detail, reason: reason, permissions: event.permissions,
            resource: event.resource, clientAddress: event.clientAddress)
    }
}
