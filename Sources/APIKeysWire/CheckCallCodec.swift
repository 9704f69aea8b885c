internal import CAPIKeysProto
internal import CProtobufC
public import NIOCore
#if canImport(Glibc)
    import Glibc
#endif

/// Decodes calls and encodes Check replies for one connection on the hot path: one arena,
/// reused from call to call, and no intermediate byte arrays.
///
/// A Check request's payload is unpacked straight from the envelope's unpacked bytes, and a
/// reply is packed straight into the outbound `ByteBuffer` with its length prefix. A connection
/// mostly repeats itself (one service, one key, the same permissions, the same answer), so the
/// codec keeps the previous request's payload bytes and strings and the previous reply's packed
/// CheckResponse: a request whose payload is the previous one's bytes is not unpacked again
/// (``Call/check(callID:request:repeated:)`` says so), one that differs reuses the strings whose
/// bytes are the same, and a reply like the previous one packs only its envelope. Not
/// thread-safe: one per connection, used on its event loop.
public final class CheckCallCodec {
    /// A decoded request frame.
    public enum Call {
        /// A Check call with its request; `repeated` when its payload is, byte for byte, that of
        /// the previous Check this codec decoded (so the request is equal to that one, too).
        case check(callID: UInt64, request: CheckRequest, repeated: Bool)
        /// A Check call whose payload is not a CheckRequest.
        case invalidCheck(callID: UInt64, error: WireError)
        /// Any other call, left for the general path.
        case other(Envelope)
    }

    private let arena = Arena()
    private static let checkMethod = Array(Authorize.check.path.utf8CString)
    /// The strings of the previous Check request.
    private var recentKey = ""
    private var recentPermissions: [String] = []
    private var recentResource = ""
    private var recentClientAddress = ""
    /// The previous Check request decoded, and its payload's bytes (nil: none, the last Check's
    /// payload was refused, or it was longer than ``maxRememberedRequestBytes``). The bytes are
    /// exempt from dynamic exclusivity checks, as the server's presented-secret memo is: the
    /// codec is one connection's, used on its event loop only.
    private var recentRequest: CheckRequest?
    @exclusivity(unchecked) private var recentRequestBytes: [UInt8] = []
    /// Longest request payload remembered: an ordinary Check takes a few hundred bytes; a longer
    /// one is unpacked each time, and the memory a connection keeps stays small.
    public static let maxRememberedRequestBytes = 512
    /// The previous reply's CheckResponse, and its Envelope packed without the call id (none
    /// before the first reply).
    private var recentResponse = CheckResponse()
    private var recentReplyRest: [UInt8]?

    public init() {}

    /// Decodes one frame body. Throws ``FramingError/malformedEnvelope(_:)`` when it is not an Envelope.
    public func decode(frame: ByteBuffer) throws -> Call {
        arena.reset()
        // The Check path calls protoc-c's functions directly: no codec closures in between.
        return try frame.withUnsafeReadableBytes { bytes in
            let unpacked = try unpackEnvelope(bytes)
            let envelope = unpacked.pointee
            guard let method = envelope.method, strcmp(method, Self.checkMethod) == 0 else {
                do {
                    return .other(try Envelope.codec.read(UnsafeRawPointer(unpacked), arena))
                } catch let error as WireError {
                    throw FramingError.malformedEnvelope(error)
                }
            }
            let payload = UnsafeRawBufferPointer(start: envelope.payload.data, count: envelope.payload.len)
            if let recentRequest, isRecentRequest(payload) {
                return .check(callID: envelope.call_id, request: recentRequest, repeated: true)
            }
            recentRequest = nil
            guard
                capikeys_protobuf_has_more_fields_than(Self.start(of: payload), payload.count, WireLimits.maxFields)
                    == 0
            else {
                return .invalidCheck(
                    callID: envelope.call_id,
                    error: .tooManyFields(message: "apikeys.v1.CheckRequest", limit: WireLimits.maxFields))
            }
            let request = arena.withAllocator { allocator in
                apikeys__v1__check_request__unpack(allocator, payload.count, Self.start(of: payload))
            }
            guard let request else {
                return .invalidCheck(
                    callID: envelope.call_id, error: .malformedMessage(message: "apikeys.v1.CheckRequest"))
            }
            do {
                let decoded = try read(request.pointee)
                remember(decoded, payload: payload)
                return .check(callID: envelope.call_id, request: decoded, repeated: false)
            } catch let error as WireError {
                return .invalidCheck(callID: envelope.call_id, error: error)
            }
        }
    }

    /// Whether `payload` holds the bytes of the previous Check request's payload.
    private func isRecentRequest(_ payload: UnsafeRawBufferPointer) -> Bool {
        guard payload.count == recentRequestBytes.count else { return false }
        guard payload.count > 0, let start = payload.baseAddress else { return true }  // both empty
        return recentRequestBytes.withUnsafeBytes { memcmp(start, $0.baseAddress!, payload.count) == 0 }
    }

    /// Keeps `request` and its payload's bytes for the next call (the request alone when the
    /// payload is too long to keep).
    private func remember(_ request: CheckRequest, payload: UnsafeRawBufferPointer) {
        recentRequestBytes.removeAll(keepingCapacity: true)
        guard payload.count <= Self.maxRememberedRequestBytes else { return }
        recentRequestBytes.append(contentsOf: payload)
        recentRequest = request
    }

    /// The CheckRequest of an unpacked struct (``CheckRequest``'s generated reader, with the
    /// checks it makes), each of its strings the previous request's when their bytes are the
    /// same. A field added to the message must be read here too
    /// (`CheckCallCodecTests.theHandReaderKnowsEveryFieldOfCheckRequest` fails until it is).
    private func read(_ c: Apikeys__V1__CheckRequest) throws -> CheckRequest {
        let message = "apikeys.v1.CheckRequest"
        var value = CheckRequest()
        value.key = try arena.string(c.key, field: "key", of: message, reusing: recentKey)
        value.permissions = try arena.strings(
            c.permissions, count: c.n_permissions, field: "permissions", of: message, reusing: recentPermissions)
        value.resource = try arena.string(c.resource, field: "resource", of: message, reusing: recentResource)
        value.clientAddress = try arena.string(
            c.client_address, field: "client_address", of: message, reusing: recentClientAddress)
        recentKey = value.key
        recentPermissions = value.permissions
        recentResource = value.resource
        recentClientAddress = value.clientAddress
        return value
    }

    /// Appends the frame of a successful Check reply to `buffer`.
    public func writeCheckReply(callID: UInt64, response: CheckResponse, to buffer: inout ByteBuffer) throws {
        // `==` on the texts is canonical equivalence: the names must also be the same bytes.
        if recentReplyRest == nil || response != recentResponse
            || !response.keyName.hasSameBytes(as: recentResponse.keyName)
            || !response.missingPermissions.elementsEqual(
                recentResponse.missingPermissions, by: { $0.hasSameBytes(as: $1) })
        {
            recentReplyRest = nil
            recentReplyRest = try Self.packedReplyRest(payload: response.serializedBytes())
            recentResponse = response
        }
        writeCheckReply(callID: callID, rest: recentReplyRest!, to: &buffer)
    }

    /// Appends the frame of the previous successful Check reply again, under `callID`: for a
    /// check the caller knows is answered exactly as the one before. False (nothing written)
    /// when there was none.
    public func repeatCheckReply(callID: UInt64, to buffer: inout ByteBuffer) -> Bool {
        guard let rest = recentReplyRest else { return false }
        writeCheckReply(callID: callID, rest: rest, to: &buffer)
        return true
    }

    /// A reply's Envelope packed without its call id: the method and `payload`.
    private static func packedReplyRest(payload: [UInt8]) throws -> [UInt8] {
        try payload.withUnsafeBufferPointer { payload in
            var envelope = Apikeys__V1__Envelope()
            apikeys__v1__envelope__init(&envelope)
            envelope.payload = ProtobufCBinaryData(
                len: payload.count, data: payload.baseAddress.map(UnsafeMutablePointer.init(mutating:)))
            return try checkMethod.withUnsafeBufferPointer { method in
                envelope.method = UnsafeMutablePointer(mutating: method.baseAddress)
                return try withUnsafePointer(to: &envelope) { envelope in
                    let message = UnsafePointer<ProtobufCMessage>(OpaquePointer(envelope))
                    let size = protobuf_c_message_get_packed_size(message)
                    guard size < UInt32.max - 16 else {
                        throw WireError.malformedMessage(message: "apikeys.v1.Envelope")
                    }
                    return [UInt8](unsafeUninitializedCapacity: size) { bytes, count in
                        count = protobuf_c_message_pack(message, bytes.baseAddress!)
                    }
                }
            }
        }
    }

    /// Appends a reply frame: an Envelope holding only `callID`, packed by protobuf-c, then
    /// `rest` (``packedReplyRest(payload:)``). protobuf-c writes fields in the order of their
    /// numbers, and the call id is field 1: the bytes are those of the whole Envelope packed at
    /// once, without the method and payload being measured and copied for every reply.
    private func writeCheckReply(callID: UInt64, rest: [UInt8], to buffer: inout ByteBuffer) {
        var envelope = Apikeys__V1__Envelope()
        apikeys__v1__envelope__init(&envelope)
        envelope.call_id = callID
        withUnsafePointer(to: &envelope) { envelope in
            let message = UnsafePointer<ProtobufCMessage>(OpaquePointer(envelope))
            let head = protobuf_c_message_get_packed_size(message)
            let frame = 4 + head + rest.count
            // One write into the buffer: the length prefix, the call id, the rest.
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: frame) { out in
                out.storeBytes(of: UInt32(head + rest.count).bigEndian, toByteOffset: 0, as: UInt32.self)
                let body = out.baseAddress!.advanced(by: 4).assumingMemoryBound(to: UInt8.self)
                let packed = protobuf_c_message_pack(message, body)
                rest.withUnsafeBytes { rest in
                    if let start = rest.baseAddress {
                        UnsafeMutableRawPointer(body + packed).copyMemory(from: start, byteCount: rest.count)
                    }
                }
                return 4 + packed + rest.count
            }
        }
    }

    private func unpackEnvelope(_ bytes: UnsafeRawBufferPointer) throws -> UnsafeMutablePointer<Apikeys__V1__Envelope> {
        guard capikeys_protobuf_has_more_fields_than(Self.start(of: bytes), bytes.count, WireLimits.maxFields) == 0
        else {
            throw FramingError.malformedEnvelope(
                .tooManyFields(message: "apikeys.v1.Envelope", limit: WireLimits.maxFields))
        }
        let unpacked = arena.withAllocator { allocator in
            apikeys__v1__envelope__unpack(allocator, bytes.count, Self.start(of: bytes))
        }
        guard let unpacked else {
            throw FramingError.malformedEnvelope(.malformedMessage(message: "apikeys.v1.Envelope"))
        }
        return unpacked
    }

    /// A non-null start for protobuf-c, which reads no byte of an empty input but wants a pointer.
    private static func start(of bytes: UnsafeRawBufferPointer) -> UnsafePointer<UInt8> {
        bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? emptyInput
    }

    /// How much of a reply's CheckResponse ``decodeReply(frame:payload:)`` reads.
    public enum ReplyPayload: Sendable {
        /// The envelope only.
        case none
        /// The decision and the deny reason: no string is copied out (what a load generator needs).
        case decision
        /// The whole CheckResponse.
        case full
    }

    /// A decoded reply frame, as a client of Check sees it.
    public struct Reply {
        public var callID: UInt64
        public var status: StatusCode
        /// With status OK and a payload of `.decision` or `.full`.
        public var decision: Decision?
        public var reason: DenyReason?
        /// With status OK and a payload of `.full`.
        public var check: CheckResponse?
    }

    /// Decodes a reply frame, and as much of its CheckResponse as `payload` says when the status
    /// is OK. Throws ``FramingError/malformedEnvelope(_:)`` when it is not an Envelope.
    public func decodeReply(frame: ByteBuffer, payload: ReplyPayload) throws -> Reply {
        arena.reset()
        return try frame.withUnsafeReadableBytes { bytes in
            let envelope = try unpackEnvelope(bytes).pointee
            var reply = Reply(callID: envelope.call_id, status: StatusCode(rawValue: envelope.status))
            guard payload != .none, reply.status == .ok else { return reply }
            let body = UnsafeRawBufferPointer(start: envelope.payload.data, count: envelope.payload.len)
            let response = arena.withAllocator { allocator in
                apikeys__v1__check_response__unpack(allocator, body.count, Self.start(of: body))
            }
            guard let response else { throw WireError.malformedMessage(message: "apikeys.v1.CheckResponse") }
            reply.decision = Decision(response.pointee.decision)
            reply.reason = DenyReason(response.pointee.reason)
            if payload == .full { reply.check = try CheckResponse.read(response.pointee, arena) }
            return reply
        }
    }
}
