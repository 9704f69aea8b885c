import APIKeysCore
import APIKeysStore
import APIKeysWire

/// Domain values as messages of the contract.
extension ApiKey {
    init(_ key: KeyRecord) {
        self.init(
            id: key.id, name: key.name, hint: key.hint, permissions: key.permissions, enabled: key.enabled,
            createdAtMS: key.createdAtMS, updatedAtMS: key.updatedAtMS, expiresAtMS: key.expiresAtMS ?? 0,
            lastUsedAtMS: key.lastUsedAtMS ?? 0, rotatedAtMS: key.rotatedAtMS ?? 0,
            allowedNetworks: key.allowedNetworks,
            graceEndsAtMS: key.graceEndsAtMS ?? 0, rateLimit: key.rateLimit.map(RateLimit.init),
            remainingUses: key.usage?.remaining)
    }
}

extension RateLimit {
    init(_ limit: KeyRateLimit) {
        self.init(requests: limit.requests, periodSeconds: limit.periodSeconds, burst: limit.burst)
    }
}

extension KeyRateLimit {
    /// As the domain takes it (``KeyRules/validRateLimit(_:)`` applies the defaults).
    init(_ limit: RateLimit) {
        self.init(requests: limit.requests, periodSeconds: limit.periodSeconds, burst: limit.burst)
    }
}

extension AuditEvent {
    init(_ record: AuditRecord) {
        self.init(
            seq: record.seq, atMS: record.atMS, action: record.action.rawValue, trigger: record.trigger.rawValue,
            keyID: record.keyID, keyName: record.keyName, actor: record.actor, detail: record.detail,
            decision: record.action == .apiRequest ? (record.denial == nil ? .allow : .deny) : .unspecified,
            reason: DenyReason(record.denial), permissions: record.permissions, resource: record.resource,
            clientAddress: record.clientAddress)
    }
}

extension ExportAuditChainResponse {
    init(_ page: AuditChain.Page) {
        func point(_ point: AuditChain.Point) -> AuditChainPoint {
            AuditChainPoint(position: point.position, hash: point.hash)
        }
        self.init(
            chain: AuditChainState(anchor: point(page.state.anchor), head: point(page.state.head)),
            links: page.links.map { previous, link in
                AuditLink(
                    position: link.position, previousHash: previous ?? [], hash: link.hash,
                    events: link.events.map(AuditEvent.init), prunedFrom: link.prunedFrom ?? 0)
            })
    }
}

extension CheckResponse {
    /// The reply to a check that had `outcome`.
    package init(_ outcome: CheckOutcome) {
        self.init(
            decision: outcome.isAllowed ? .allow : .deny, reason: DenyReason(outcome.denial),
            httpStatus: outcome.httpStatus, keyID: outcome.key?.id ?? "", keyName: outcome.key?.name ?? "",
            missingPermissions: outcome.missingPermissions, expiresAtMS: outcome.key?.expiresAtMS ?? 0,
            retryAfterMS: outcome.retryAfterMS)
    }
}

extension DenyReason {
    init(_ denial: Denial?) {
        self = denial.map { DenyReason(rawValue: Int32($0.rawValue)) } ?? .unspecified
    }
}

extension AdminToken {
    init(_ token: AdminTokenInfo) {
        self.init(
            name: token.name, scope: AdminScope(token.grant.scope), ceiling: token.grant.ceiling?.sorted() ?? [],
            maxKeyLifetimeMS: token.grant.maxKeyLifetimeMS ?? 0, createdAtMS: token.createdAtMS,
            expiresAtMS: token.grant.expiresAtMS ?? 0, lastUsedAtMS: token.lastUsedAtMS)
    }
}

extension AdminScope {
    init(_ scope: AdminGrant.Scope) {
        switch scope {
        case .read: self = .read
        case .keys: self = .keys
        case .admin: self = .admin
        }
    }
}

extension AdminGrant.Scope {
    /// The scope a request names; nil for UNSPECIFIED or a number this version does not know.
    init?(_ scope: AdminScope) {
        switch scope {
        case .read: self = .read
        case .keys: self = .keys
        case .admin: self = .admin
        default: return nil
        }
    }
}
