internal import CAPIKeysProto

/// KeyAdmin/ListKeys request: one page of keys, oldest first.
public struct ListKeysRequest: WireMessage {
    /// 0 = the server's default; above its maximum is clamped.
    public var pageSize: UInt32
    /// Empty for the first page, else the previous page's ``ListKeysResponse/nextPageToken``.
    public var pageToken: String

    public init(pageSize: UInt32 = 0, pageToken: String = "") {
        self.pageSize = pageSize
        self.pageToken = pageToken
    }

    public init() { self.init(pageSize: 0) }

    public static let codec = WireCodec<ListKeysRequest>(
        "apikeys.v1.ListKeysRequest",
        initialize: apikeys__v1__list_keys_request__init,
        unpack: apikeys__v1__list_keys_request__unpack,
        read: { c, arena in
            ListKeysRequest(
                pageSize: c.page_size,
                pageToken: try arena.string(c.page_token, field: "page_token", of: "apikeys.v1.ListKeysRequest"))
        },
        write: { value, c, arena in
            c.page_size = value.pageSize
            c.page_token = try arena.cString(value.pageToken, field: "page_token", of: "apikeys.v1.ListKeysRequest")
        }
    )
}

/// KeyAdmin/ListKeys reply.
public struct ListKeysResponse: WireMessage {
    public var keys: [ApiKey]
    /// Empty on the last page.
    public var nextPageToken: String

    public init(keys: [ApiKey] = [], nextPageToken: String = "") {
        self.keys = keys
        self.nextPageToken = nextPageToken
    }

    public init() { self.init(keys: []) }

    public static let codec = WireCodec<ListKeysResponse>(
        "apikeys.v1.ListKeysResponse",
        initialize: apikeys__v1__list_keys_response__init,
        unpack: apikeys__v1__list_keys_response__unpack,
        read: { c, arena in
            ListKeysResponse(
                keys: try arena.messages(c.keys, count: c.n_keys),
                nextPageToken: try arena.string(
                    c.next_page_token, field: "next_page_token", of: "apikeys.v1.ListKeysResponse"))
        },
        write: { value, c, arena in
            (c.n_keys, c.keys) = try arena.makeArray(value.keys, as: Apikeys__V1__ApiKey.self)
            c.next_page_token = try arena.cString(
                value.nextPageToken, field: "next_page_token", of: "apikeys.v1.ListKeysResponse")
        }
    )
}
