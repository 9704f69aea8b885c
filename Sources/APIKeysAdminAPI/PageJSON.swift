import APIKeysCore
import APIKeysJSON
import APIKeysWire

// The admin API's own JSON documents around the contract's messages (``ContractJSON`` naming).

/// `GET /v1/keys`: a page of keys; `next_page_token` empty on the last page.
struct KeyPageJSON: Encodable {
    let keys: [KeyJSON]
    let nextPageToken: String
}

/// `GET /v1/audit-events`: newest first.
struct AuditPageJSON: Encodable {
    let events: [AuditEventJSON]
    let nextPageToken: String
    /// The oldest event retention has kept (0: none pruned yet) and the retention itself.
    let oldestRetainedAtMS, retentionMS: Int64

    init(_ page: ListAuditEventsResponse) {
        events = page.events.map(AuditEventJSON.init)
        (nextPageToken, oldestRetainedAtMS, retentionMS) = (
            page.nextPageToken, page.oldestRetainedAtMS, page.retentionMS
        )
    }
}

/// `GET /v1/audit-chain`: whole links with their events; hashes in lowercase hex.
struct AuditChainPageJSON: Encodable {
    struct Point: Encodable {
        let position: UInt64
        let hash: String
        init(_ point: AuditChainPoint) { (position, hash) = (point.position, AuditChain.hex(point.hash)) }
    }

    struct Link: Encodable {
        let position: UInt64
        let previousHash, hash: String
        let events: [AuditEventJSON]
        /// A gap (its events pruned, its hash kept): the first position it stands for.
        let prunedFrom: UInt64?

        init(_ link: AuditLink) {
            (position, previousHash, hash) = (
                link.position, AuditChain.hex(link.previousHash), AuditChain.hex(link.hash)
            )
            events = link.events.map(AuditEventJSON.init)
            prunedFrom = link.prunedFrom == 0 ? nil : link.prunedFrom
        }
    }

    /// Where the retained chain starts and where it ends now.
    let anchor, head: Point
    let links: [Link]

    init(_ page: ExportAuditChainResponse) {
        (anchor, head) = (Point(page.chain.anchor), Point(page.chain.head))
        links = page.links.map(Link.init)
    }
}

/// `GET /v1/policy`.
struct PolicyJSON: Encodable {
    /// 0: no maximum.
    let maxKeyLifetimeMS: Int64

    init(_ policy: GetPolicyResponse) { maxKeyLifetimeMS = policy.maxKeyLifetimeMS }
}

/// `GET /v1/audit-chain/verify`: the server's own walk of its chain, anchor to head.
struct ChainVerificationJSON: Encodable {
    let verified: Bool
    let links: Int
    let events: Int
    let headPosition: UInt64
    /// Where and why it does not hold (absent when it does).
    let brokenAt: UInt64?
    let reason: String?
    /// When the walk ended (a verdict is answered again for a minute).
    let checkedAtMS: Int64
    let checkedAt: String?

    init(_ verification: AuditChainVerification, checkedAtMS: Int64) {
        (verified, links, events, headPosition) = (
            true, verification.links, verification.events, verification.head.position
        )
        (brokenAt, reason) = (nil, nil)
        (self.checkedAtMS, checkedAt) = (checkedAtMS, JSONTime.rfc3339(checkedAtMS))
    }

    init(_ broken: AuditChainVerifier.Break, checkedAtMS: Int64) {
        (verified, links, events, headPosition) = (false, 0, 0, 0)
        (brokenAt, reason) = (broken.position, broken.reason)
        (self.checkedAtMS, checkedAt) = (checkedAtMS, JSONTime.rfc3339(checkedAtMS))
    }
}
