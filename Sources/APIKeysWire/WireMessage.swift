internal import CProtobufC

/// A message of the apikeyd wire contract (`proto/apikeys/v1`), packed and unpacked by protobuf-c.
///
/// ```swift
/// let bytes = try CheckRequest(key: secret, permissions: ["jobs:read"]).serializedBytes()
/// let request = try CheckRequest(serializedBytes: bytes)
/// ```
public protocol WireMessage: Sendable, Hashable {
    /// The message with every field at its default.
    init()
    /// How protobuf-c packs and unpacks this message. An implementation detail of APIKeysWire.
    static var codec: WireCodec<Self> { get }
}

extension WireMessage {
    /// Decodes protobuf bytes. Throws ``WireError`` when they are not a valid message.
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws {
        self = try Self.codec.decode(bytes)
    }

    /// Decodes protobuf bytes. Throws ``WireError`` when they are not a valid message.
    public init(serializedBytes bytes: some Collection<UInt8>) throws {
        let decoded = try bytes.withContiguousStorageIfAvailable { try Self.codec.decode(UnsafeRawBufferPointer($0)) }
        self = try decoded ?? Array(bytes).withUnsafeBytes { try Self.codec.decode($0) }
    }

    /// Encodes to protobuf bytes. Throws ``WireError/nulInString(message:field:)`` for a string
    /// holding a NUL, which protobuf-c cannot carry.
    public func serializedBytes() throws -> [UInt8] {
        let arena = Arena()
        let packed = try Self.codec.make(self, arena)
        let message = UnsafePointer<ProtobufCMessage>(OpaquePointer(packed))
        let size = protobuf_c_message_get_packed_size(message)
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            count = size > 0 ? protobuf_c_message_pack(message, buffer.baseAddress!) : 0
        }
    }
}

/// The bridge between a Swift message type and its protobuf-c struct. Opaque to users of APIKeysWire.
public struct WireCodec<Message: Sendable>: Sendable {
    let name: String
    let unpack: @Sendable (Arena, UnsafeRawBufferPointer) -> UnsafeRawPointer?
    let read: @Sendable (UnsafeRawPointer, Arena) throws -> Message
    let make: @Sendable (Message, Arena) throws -> UnsafeMutableRawPointer

    /// - Parameters:
    ///   - name: the protobuf message name, for errors.
    ///   - initialize: protoc-c's `..._init`.
    ///   - unpack: protoc-c's `..._unpack`.
    ///   - read: copies the fields of an unpacked struct into a Swift value.
    ///   - write: sets the fields of an initialised struct from a Swift value.
    init<C>(
        _ name: String,
        initialize: @escaping @Sendable (UnsafeMutablePointer<C>?) -> Void,
        unpack:
            @escaping @Sendable (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?) ->
            UnsafeMutablePointer<C>?,
        read: @escaping @Sendable (C, Arena) throws -> Message,
        write: @escaping @Sendable (Message, inout C, Arena) throws -> Void
    ) {
        self.name = name
        self.unpack = { arena, bytes in
            arena.withAllocator { allocator in
                let data = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? emptyInput
                return UnsafeRawPointer(unpack(allocator, bytes.count, data))
            }
        }
        self.read = { pointer, arena in try read(pointer.assumingMemoryBound(to: C.self).pointee, arena) }
        self.make = { value, arena in
            let pointer = arena.allocate(MemoryLayout<C>.size).bindMemory(to: C.self, capacity: 1)
            initialize(pointer)
            try write(value, &pointer.pointee, arena)
            return UnsafeMutableRawPointer(pointer)
        }
    }

    func decode(_ bytes: UnsafeRawBufferPointer) throws -> Message {
        let arena = Arena()
        guard let unpacked = unpack(arena, bytes) else { throw WireError.malformedMessage(message: name) }
        return try read(unpacked, arena)
    }
}

/// protobuf-c reads no byte of an empty input, but wants a non-null pointer.
nonisolated(unsafe) let emptyInput = UnsafePointer<UInt8>(UnsafeMutablePointer<UInt8>.allocate(capacity: 1))
