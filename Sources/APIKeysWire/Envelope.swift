internal import CAPIKeysProto

/// One frame's content: a request or a reply, matched by ``callID``.
public struct Envelope: WireMessage {
    /// Chosen by the caller, echoed in the reply.
    public var callID: UInt64
    /// Requests: the full method path (see ``Method``); echoed in replies.
    public var method: String
    /// The serialized request or reply message.
    public var payload: [UInt8]
    /// Replies: the status of the call.
    public var status: StatusCode
    /// Replies: why, when ``status`` is not OK.
    public var statusMessage: String
    /// Requests: call metadata, e.g. ``MetadataKey/authorization``.
    public var metadata: [String: String]
    /// Requests: the caller's deadline in milliseconds, 0 = none.
    public var timeoutMS: UInt32

    public init(
        callID: UInt64 = 0, method: String = "", payload: [UInt8] = [], status: StatusCode = .ok,
        statusMessage: String = "", metadata: [String: String] = [:], timeoutMS: UInt32 = 0
    ) {
        self.callID = callID
        self.method = method
        self.payload = payload
        self.status = status
        self.statusMessage = statusMessage
        self.metadata = metadata
        self.timeoutMS = timeoutMS
    }

    public init() { self.init(callID: 0) }

    public static let codec = WireCodec<Envelope>(
        "apikeys.v1.Envelope",
        initialize: apikeys__v1__envelope__init,
        unpack: apikeys__v1__envelope__unpack,
        read: { c, arena in
            let name = "apikeys.v1.Envelope"
            let entries: [MetadataEntry] = try arena.messages(c.metadata, count: c.n_metadata)
            // A repeated key in a map: the last entry wins, as in every protobuf runtime.
            let metadata = Dictionary(entries.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
            return Envelope(
                callID: c.call_id,
                method: try arena.string(c.method, field: "method", of: name),
                payload: arena.bytes(c.payload),
                status: StatusCode(rawValue: c.status),
                statusMessage: try arena.string(c.status_message, field: "status_message", of: name),
                metadata: metadata,
                timeoutMS: c.timeout_ms
            )
        },
        write: { value, c, arena in
            let name = "apikeys.v1.Envelope"
            c.call_id = value.callID
            c.method = try arena.cString(value.method, field: "method", of: name)
            c.payload = arena.binary(value.payload)
            c.status = value.status.rawValue
            c.status_message = try arena.cString(value.statusMessage, field: "status_message", of: name)
            c.timeout_ms = value.timeoutMS
            let entries = value.metadata.sorted { $0.key < $1.key }.map { entry in
                MetadataEntry(key: entry.key, value: entry.value)
            }
            (c.n_metadata, c.metadata) = try arena.makeArray(entries, as: Apikeys__V1__Envelope__MetadataEntry.self)
        }
    )
}

/// One entry of ``Envelope/metadata`` on the wire (a protobuf map is a repeated entry message).
struct MetadataEntry: WireMessage {
    var key = ""
    var value = ""

    static let codec = WireCodec<MetadataEntry>(
        "apikeys.v1.Envelope.MetadataEntry",
        initialize: apikeys__v1__envelope__metadata_entry__init,
        // protoc-c writes no unpack function for a map entry: it is only ever read inside an Envelope.
        unpack: { _, _, _ in nil },
        read: { c, arena in
            let name = "apikeys.v1.Envelope.MetadataEntry"
            return MetadataEntry(
                key: try arena.string(c.key, field: "key", of: name),
                value: try arena.string(c.value, field: "value", of: name)
            )
        },
        write: { value, c, arena in
            let name = "apikeys.v1.Envelope.MetadataEntry"
            c.key = try arena.cString(value.key, field: "key", of: name)
            c.value = try arena.cString(value.value, field: "value", of: name)
        }
    )
}
