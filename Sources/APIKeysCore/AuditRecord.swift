/// What an audit event records.
public enum AuditAction: String, Sendable, Hashable, CaseIterable {
    case keyCreated = "key.created"
    /// Name or expiry changed.
    case keyUpdated = "key.updated"
    case keyPermissionsChanged = "key.permissions_changed"
    case keyEnabled = "key.enabled"
    case keyDisabled = "key.disabled"
    case keyRotated = "key.rotated"
    case keyDeleted = "key.deleted"
    /// A leak report disabled the key, or found it disabled (ReportLeakedKey: actor `leak report`,
    /// where it was found in `resource`, the reporter's address in `clientAddress`).
    case keyLeakReported = "key.leak_reported"
    /// A change of the key that a replica had applied was not in the database when its history
    /// was rewritten (a PostgreSQL failover that lost committed changes, a restore): actor
    /// `replica N`, the change and its version in detail. The change must be made again.
    case keyChangeLost = "key.change_lost"
    /// A check of a well-formed key.
    case apiRequest = "api.request"
    /// The server pruned events older than its retention (actor `retention`, counts in detail).
    case auditPruned = "audit.pruned"
    /// An admin token was created (its name in detail; the key fields are empty).
    case adminTokenCreated = "admin_token.created"
    /// An admin token was revoked (its name in detail; the key fields are empty).
    case adminTokenRevoked = "admin_token.revoked"
    /// A KeyAdmin call outside its admin token's grant was refused (actor: the token's name; the
    /// method and what was missing in detail; the key fields name the key when there is one).
    case adminPermissionDenied = "admin.permission_denied"

    /// `api` for checks, `admin` for everything else.
    public var trigger: AuditTrigger { self == .apiRequest ? .api : .admin }

    /// The history of keys and admin tokens (what was done to them, and pruning itself), kept
    /// under the admin retention (by default forever); the rest (checks, refused admin calls)
    /// is traffic, kept under the audit retention.
    public var isHistory: Bool { self != .apiRequest && self != .adminPermissionDenied }
}

/// Who caused an audit event.
public enum AuditTrigger: String, Sendable, Hashable {
    case admin
    case api
}

/// One entry of the audit trail.
public struct AuditRecord: Sendable, Hashable {
    /// Increases in the order events happened.
    public var seq: UInt64
    public var atMS: Int64
    public var action: AuditAction
    public var keyID: String
    public var keyName: String
    /// Admin actions: who did it.
    public var actor: String
    /// Admin actions: what changed, in words.
    public var detail: String
    /// api.request: nil = allowed.
    public var denial: Denial?
    /// api.request: the permissions asked for; key.created / key.permissions_changed: the new set.
    public var permissions: [String]
    public var resource: String
    public var clientAddress: String

    public init(
        seq: UInt64 = 0, atMS: Int64, action: AuditAction, keyID: String, keyName: String, actor: String = "",
        detail: String = "", denial: Denial? = nil, permissions: [String] = [], resource: String = "",
        clientAddress: String = ""
    ) {
        self.seq = seq
        self.atMS = atMS
        self.action = action
        self.keyID = keyID
        self.keyName = keyName
        self.actor = actor
        self.detail = detail
        self.denial = denial
        self.permissions = permissions
        self.resource = resource
        self.clientAddress = clientAddress
    }

    public var trigger: AuditTrigger { action.trigger }

    /// An upper bound of this event's size as a protobuf message: its strings plus a tag and
    /// length (or a varint) for every field.
    public var approximateEncodedSize: Int { withUnsafePointer(to: self) { $0.approximateEncodedSize } }
}

extension UnsafePointer<AuditRecord> {
    /// ``AuditRecord/approximateEncodedSize`` of the record here, its fields read where they lie:
    /// a property of the record called on `pointee` copies the record first (a retain and a
    /// release for each of its strings and arrays), and the audit writer asks this of every check.
    public var approximateEncodedSize: Int {
        let strings =
            pointee.keyID.utf8.count + pointee.keyName.utf8.count + pointee.actor.utf8.count
            + pointee.detail.utf8.count + pointee.resource.utf8.count + pointee.clientAddress.utf8.count
            + pointee.action.rawValue.utf8.count
        return strings + pointee.permissions.reduce(0) { $0 + $1.utf8.count + 3 } + 16 * 11
    }
}

/// Which audit events to list; every filter is optional.
public struct AuditQuery: Sendable, Hashable {
    public var keyID: String?
    public var action: AuditAction?
    /// At or after.
    public var sinceMS: Int64?
    /// Before.
    public var untilMS: Int64?

    public init(keyID: String? = nil, action: AuditAction? = nil, sinceMS: Int64? = nil, untilMS: Int64? = nil) {
        self.keyID = keyID
        self.action = action
        self.sinceMS = sinceMS
        self.untilMS = untilMS
    }

    /// Whether `event` passes every filter given: what a store checks of each event it unpacks
    /// from a batch (its SQL can only tell which batches may hold matches).
    public func admits(_ event: AuditRecord) -> Bool {
        (keyID.map { $0 == event.keyID } ?? true) && (action.map { $0 == event.action } ?? true)
            && (sinceMS.map { event.atMS >= $0 } ?? true) && (untilMS.map { event.atMS < $0 } ?? true)
    }
}

extension AuditRecord: AuditChain.DigestInput {
    public var reasonNumber: UInt32 { UInt32(denial?.rawValue ?? 0) }
    public var actionName: String { action.rawValue }
}
