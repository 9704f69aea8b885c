internal import CAPIKeysProto

/// One entry of the audit trail.
public struct AuditEvent: WireMessage {
    /// Increases in the order events happened.
    public var seq: UInt64
    public var atMS: Int64
    /// e.g. `key.created` or `api.request`.
    public var action: String
    /// `admin` or `api`.
    public var trigger: String
    public var keyID: String
    public var keyName: String
    /// Who did it (admin actions).
    public var actor: String
    /// What changed, in words (admin actions).
    public var detail: String
    public var decision: Decision
    public var reason: DenyReason
    public var permissions: [String]
    public var resource: String
    public var clientAddress: String

    public init(
        seq: UInt64 = 0, atMS: Int64 = 0, action: String = "", trigger: String = "", keyID: String = "",
        keyName: String = "", actor: String = "", detail: String = "", decision: Decision = .unspecified,
        reason: DenyReason = .unspecified, permissions: [String] = [], resource: String = "",
        clientAddress: String = ""
    ) {
        self.seq = seq
        self.atMS = atMS
        self.action = action
        self.trigger = trigger
        self.keyID = keyID
        self.keyName = keyName
        self.actor = actor
        self.detail = detail
        self.decision = decision
        self.reason = reason
        self.permissions = permissions
        self.resource = resource
        self.clientAddress = clientAddress
    }

    public init() { self.init(seq: 0) }

    public static let codec = WireCodec<AuditEvent>(
        "apikeys.v1.AuditEvent",
        initialize: apikeys__v1__audit_event__init,
        unpack: apikeys__v1__audit_event__unpack,
        read: { c, arena in
            let name = "apikeys.v1.AuditEvent"
            return AuditEvent(
                seq: c.seq,
                atMS: c.at_ms,
                action: try arena.string(c.action, field: "action", of: name),
                trigger: try arena.string(c.trigger, field: "trigger", of: name),
                keyID: try arena.string(c.key_id, field: "key_id", of: name),
                keyName: try arena.string(c.key_name, field: "key_name", of: name),
                actor: try arena.string(c.actor, field: "actor", of: name),
                detail: try arena.string(c.detail, field: "detail", of: name),
                decision: Decision(c.decision),
                reason: DenyReason(c.reason),
                permissions: try arena.strings(c.permissions, count: c.n_permissions, field: "permissions", of: name),
                resource: try arena.string(c.resource, field: "resource", of: name),
                clientAddress: try arena.string(c.client_address, field: "client_address", of: name)
            )
        },
        write: { value, c, arena in
            let name = "apikeys.v1.AuditEvent"
            c.seq = value.seq
            c.at_ms = value.atMS
            c.action = try arena.cString(value.action, field: "action", of: name)
            c.trigger = try arena.cString(value.trigger, field: "trigger", of: name)
            c.key_id = try arena.cString(value.keyID, field: "key_id", of: name)
            c.key_name = try arena.cString(value.keyName, field: "key_name", of: name)
            c.actor = try arena.cString(value.actor, field: "actor", of: name)
            c.detail = try arena.cString(value.detail, field: "detail", of: name)
            c.decision = value.decision.cValue
            c.reason = value.reason.cValue
            (c.n_permissions, c.permissions) = try arena.cStrings(value.permissions, field: "permissions", of: name)
            c.resource = try arena.cString(value.resource, field: "resource", of: name)
            c.client_address = try arena.cString(value.clientAddress, field: "client_address", of: name)
        }
    )
}

/// KeyAdmin/ListAuditEvents request. Every filter is optional; results are newest first.
public struct ListAuditEventsRequest: WireMessage {
    /// Only this key's events; empty = all.
    public var keyID: String
    /// Only this action; empty = all.
    public var action: String
    /// At or after this time; 0 = no bound.
    public var sinceMS: Int64
    /// Before this time; 0 = no bound.
    public var untilMS: Int64
    public var pageSize: UInt32
    public var pageToken: String

    public init(
        keyID: String = "", action: String = "", sinceMS: Int64 = 0, untilMS: Int64 = 0, pageSize: UInt32 = 0,
        pageToken: String = ""
    ) {
        self.keyID = keyID
        self.action = action
        self.sinceMS = sinceMS
        self.untilMS = untilMS
        self.pageSize = pageSize
        self.pageToken = pageToken
    }

    public init() { self.init(keyID: "") }

    public static let codec = WireCodec<ListAuditEventsRequest>(
        "apikeys.v1.ListAuditEventsRequest",
        initialize: apikeys__v1__list_audit_events_request__init,
        unpack: apikeys__v1__list_audit_events_request__unpack,
        read: { c, arena in
            let name = "apikeys.v1.ListAuditEventsRequest"
            return ListAuditEventsRequest(
                keyID: try arena.string(c.key_id, field: "key_id", of: name),
                action: try arena.string(c.action, field: "action", of: name),
                sinceMS: c.since_ms,
                untilMS: c.until_ms,
                pageSize: c.page_size,
                pageToken: try arena.string(c.page_token, field: "page_token", of: name)
            )
        },
        write: { value, c, arena in
            let name = "apikeys.v1.ListAuditEventsRequest"
            c.key_id = try arena.cString(value.keyID, field: "key_id", of: name)
            c.action = try arena.cString(value.action, field: "action", of: name)
            c.since_ms = value.sinceMS
            c.until_ms = value.untilMS
            c.page_size = value.pageSize
            c.page_token = try arena.cString(value.pageToken, field: "page_token", of: name)
        }
    )
}

/// KeyAdmin/ListAuditEvents reply.
public struct ListAuditEventsResponse: WireMessage {
    /// At most the page size, and fewer when they would exceed 1 MiB encoded.
    public var events: [AuditEvent]
    /// Empty on the last page.
    public var nextPageToken: String
    /// Time (Unix ms) of the oldest event kept, whatever the filters; 0 when the trail is empty.
    public var oldestRetainedAtMS: Int64
    /// How long the server keeps audit events, in ms; 0 = forever.
    public var retentionMS: Int64

    public init(
        events: [AuditEvent] = [], nextPageToken: String = "", oldestRetainedAtMS: Int64 = 0, retentionMS: Int64 = 0
    ) {
        self.events = events
        self.nextPageToken = nextPageToken
        self.oldestRetainedAtMS = oldestRetainedAtMS
        self.retentionMS = retentionMS
    }

    public init() { self.init(events: []) }

    public static let codec = WireCodec<ListAuditEventsResponse>(
        "apikeys.v1.ListAuditEventsResponse",
        initialize: apikeys__v1__list_audit_events_response__init,
        unpack: apikeys__v1__list_audit_events_response__unpack,
        read: { c, arena in
            ListAuditEventsResponse(
                events: try arena.messages(c.events, count: c.n_events),
                nextPageToken: try arena.string(
                    c.next_page_token, field: "next_page_token", of: "apikeys.v1.ListAuditEventsResponse"),
                oldestRetainedAtMS: c.oldest_retained_at_ms, retentionMS: c.retention_ms)
        },
        write: { value, c, arena in
            (c.n_events, c.events) = try arena.makeArray(value.events, as: Apikeys__V1__AuditEvent.self)
            c.next_page_token = try arena.cString(
                value.nextPageToken, field: "next_page_token", of: "apikeys.v1.ListAuditEventsResponse")
            c.oldest_retained_at_ms = value.oldestRetainedAtMS
            c.retention_ms = value.retentionMS
        }
    )
}
