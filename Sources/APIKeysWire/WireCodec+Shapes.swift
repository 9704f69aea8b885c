internal import CProtobufC
internal import CAPIKeysProto

/// Codecs for the message shapes the contract uses more than once, so each is written once.
extension WireCodec {
    /// A message with no fields.
    init<C>(
        empty name: String,
        initialize: @escaping @Sendable (UnsafeMutablePointer<C>?) -> Void,
        unpack:
            @escaping @Sendable (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?) ->
            UnsafeMutablePointer<C>?,
        value: @escaping @Sendable () -> Message
    ) {
        self.init(name, initialize: initialize, unpack: unpack, read: { _, _ in value() }, write: { _, _, _ in })
    }

    /// A message whose only field is `string id = 1`.
    init<C>(
        id name: String,
        initialize: @escaping @Sendable (UnsafeMutablePointer<C>?) -> Void,
        unpack:
            @escaping @Sendable (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?) ->
            UnsafeMutablePointer<C>?,
        field: WritableKeyPath<C, UnsafeMutablePointer<CChar>?> & Sendable,
        get: @escaping @Sendable (Message) -> String,
        make: @escaping @Sendable (String) -> Message
    ) {
        self.init(
            name, initialize: initialize, unpack: unpack,
            read: { c, arena in make(try arena.string(c[keyPath: field], field: "id", of: name)) },
            write: { value, c, arena in c[keyPath: field] = try arena.cString(get(value), field: "id", of: name) }
        )
    }

    /// A message whose only field is `ApiKey key = 1`.
    init<C>(
        key name: String,
        initialize: @escaping @Sendable (UnsafeMutablePointer<C>?) -> Void,
        unpack:
            @escaping @Sendable (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?) ->
            UnsafeMutablePointer<C>?,
        field: WritableKeyPath<C, UnsafeMutablePointer<Apikeys__V1__ApiKey>?> & Sendable,
        get: @escaping @Sendable (Message) -> ApiKey,
        make: @escaping @Sendable (ApiKey) -> Message
    ) {
        self.init(
            name, initialize: initialize, unpack: unpack,
            read: { c, arena in make(try arena.message(c[keyPath: field])) },
            write: { value, c, arena in c[keyPath: field] = try arena.make(get(value), as: Apikeys__V1__ApiKey.self) }
        )
    }

    /// A message of `ApiKey key = 1` and `string secret = 2`.
    init<C>(
        keyAndSecret name: String,
        initialize: @escaping @Sendable (UnsafeMutablePointer<C>?) -> Void,
        unpack:
            @escaping @Sendable (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?) ->
            UnsafeMutablePointer<C>?,
        key: WritableKeyPath<C, UnsafeMutablePointer<Apikeys__V1__ApiKey>?> & Sendable,
        secret: WritableKeyPath<C, UnsafeMutablePointer<CChar>?> & Sendable,
        get: @escaping @Sendable (Message) -> (ApiKey, String),
        make: @escaping @Sendable (ApiKey, String) -> Message
    ) {
        self.init(
            name, initialize: initialize, unpack: unpack,
            read: { c, arena in
                make(
                    try arena.message(c[keyPath: key]), try arena.string(c[keyPath: secret], field: "secret", of: name))
            },
            write: { value, c, arena in
                let (apiKey, secretValue) = get(value)
                c[keyPath: key] = try arena.make(apiKey, as: Apikeys__V1__ApiKey.self)
                c[keyPath: secret] = try arena.cString(secretValue, field: "secret", of: name)
            }
        )
    }
}
