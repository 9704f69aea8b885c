import NIOCore
import Testing
@testable import APIKeysWire

/// The hot-path codec agrees with the general one, frame for frame, and keeps working when its
/// arena is reused across calls of different sizes.
@Suite struct CheckCallCodecTests {
    private func body(_ envelope: Envelope) throws -> ByteBuffer {
        ByteBuffer(bytes: try envelope.serializedBytes())
    }

    @Test func decodesCheckCallsAndLeavesOthersWhole() throws {
        let codec = CheckCallCodec()
        let request = CheckRequest(
            key: "dbm_x", permissions: ["jobs:read", "clé"], resource: "GET /", clientAddress: "::1")
        let check = Envelope(callID: 7, method: Authorize.check.path, payload: try request.serializedBytes())
        guard case .check(let callID, let decoded, let repeated) = try codec.decode(frame: body(check)) else {
            Issue.record("not decoded as a check")
            return
        }
        #expect(callID == 7 && decoded == request && !repeated)

        let admin = Envelope(
            callID: 8, method: KeyAdmin.listKeys.path, payload: [1, 2], metadata: ["authorization": "Bearer t"])
        guard case .other(let other) = try codec.decode(frame: body(admin)) else {
            Issue.record("an admin call was not passed through")
            return
        }
        #expect(other == admin)
    }

    @Test func aCheckWithABadPayloadIsInvalidNotAProtocolError() throws {
        let codec = CheckCallCodec()
        let bad = Envelope(callID: 9, method: Authorize.check.path, payload: [0xFF, 0x01])
        guard case .invalidCheck(let callID, let error) = try codec.decode(frame: body(bad)) else {
            Issue.record("not reported as an invalid check")
            return
        }
        #expect(callID == 9 && error == .malformedMessage(message: "apikeys.v1.CheckRequest"))
        let nul = Envelope(callID: 10, method: Authorize.check.path, payload: [0x0A, 2, 0x61, 0])
        guard case .invalidCheck(_, let nulError) = try codec.decode(frame: body(nul)) else {
            Issue.record("a NUL in the key was not refused")
            return
        }
        #expect(nulError == .nulInString(message: "apikeys.v1.CheckRequest", field: "key"))
        #expect(throws: FramingError.self) { try codec.decode(frame: ByteBuffer(bytes: [0xFF, 0xFF, 0xFF])) }
    }

    @Test func repliesRoundTripAndMatchTheGeneralEncoder() throws {
        let codec = CheckCallCodec()
        for (index, response) in [
            CheckResponse(decision: .allow, httpStatus: 200, keyID: "key_1", keyName: "ci", expiresAtMS: 5),
            CheckResponse(
                decision: .deny, reason: .missingPermission, httpStatus: 403, keyID: "key_1",
                keyName: String(repeating: "long name ", count: 500), missingPermissions: ["vault:read"]),
            CheckResponse(decision: .deny, reason: .malformedKey, httpStatus: 401),
        ].enumerated() {
            var buffer = ByteBuffer()
            try codec.writeCheckReply(callID: UInt64(index), response: response, to: &buffer)
            var expected = ByteBuffer()
            try Framing.write(
                Envelope(callID: UInt64(index), method: Authorize.check.path, payload: try response.serializedBytes()),
                to: &expected)
            #expect(buffer == expected)

            let frame = try #require(try FrameDecoder.nextFrame(in: &buffer, maxFrameSize: 1 << 20))
            let reply = try codec.decodeReply(frame: frame, payload: .full)
            #expect(reply.callID == UInt64(index) && reply.status == .ok && reply.check == response)
            let brief = try codec.decodeReply(frame: frame, payload: .decision)
            #expect(brief.decision == response.decision && brief.reason == response.reason && brief.check == nil)
            let bare = try codec.decodeReply(frame: frame, payload: .none)
            #expect(bare.callID == UInt64(index) && bare.decision == nil && bare.check == nil)
        }
        let failed = try codec.decodeReply(
            frame: body(Envelope(callID: 3, status: .unavailable, statusMessage: "busy")), payload: .full)
        #expect(failed.status == .unavailable && failed.check == nil && failed.decision == nil)
    }

    /// A reply is its call id packed alone, then the rest of the envelope packed once: the bytes
    /// must be those of the whole envelope packed at once, for every width of call id.
    @Test func aReplyUnderAnyCallIDIsTheWholeEnvelopesBytes() throws {
        let codec = CheckCallCodec()
        let responses = [
            CheckResponse(decision: .allow, httpStatus: 200, keyID: "key_1", keyName: "ci", expiresAtMS: 5),
            CheckResponse(decision: .deny, reason: .malformedKey, httpStatus: 401),
        ]
        let callIDs: [UInt64] = [0, 1, 127, 128, 16_383, 16_384, 1 << 35, UInt64(Int64.max), UInt64.max]
        for response in responses {
            for (index, callID) in callIDs.enumerated() {
                var buffer = ByteBuffer()
                if index % 2 == 0 {
                    try codec.writeCheckReply(callID: callID, response: response, to: &buffer)
                } else {
                    #expect(codec.repeatCheckReply(callID: callID, to: &buffer))
                }
                var expected = ByteBuffer()
                try Framing.write(
                    Envelope(callID: callID, method: Authorize.check.path, payload: try response.serializedBytes()),
                    to: &expected)
                #expect(buffer == expected, "call id \(callID)")
            }
        }
    }

    /// A request is taken for the previous one only when its payload is the previous Check's,
    /// byte for byte: not after a Check that was refused, not for a payload too long to keep,
    /// and still after a call of another method in between.
    @Test func aRequestIsRepeatedOnlyWhenItsBytesAreThePreviousChecks() throws {
        let codec = CheckCallCodec()
        let a = CheckRequest(key: "dbm_a", permissions: ["jobs:read"], resource: "GET /a", clientAddress: "::1")
        let long = CheckRequest(
            key: "dbm_a", permissions: ["jobs:read"],
            resource: String(repeating: "r", count: CheckCallCodec.maxRememberedRequestBytes))
        let calls: [(payload: [UInt8], method: String, expected: CheckRequest?, repeated: Bool)] = [
            (try a.serializedBytes(), Authorize.check.path, a, false),
            (try a.serializedBytes(), Authorize.check.path, a, true),
            ([1, 2], KeyAdmin.listKeys.path, nil, false),
            (try a.serializedBytes(), Authorize.check.path, a, true),
            ([0xFF, 0x01], Authorize.check.path, nil, false),
            (try a.serializedBytes(), Authorize.check.path, a, false),
            (try long.serializedBytes(), Authorize.check.path, long, false),
            (try long.serializedBytes(), Authorize.check.path, long, false),
            (try a.serializedBytes(), Authorize.check.path, a, false),
            ([], Authorize.check.path, CheckRequest(), false),
            ([], Authorize.check.path, CheckRequest(), true),
            (try a.serializedBytes(), Authorize.check.path, a, false),
        ]
        for (index, call) in calls.enumerated() {
            let frame = try body(Envelope(callID: UInt64(index), method: call.method, payload: call.payload))
            switch try codec.decode(frame: frame) {
            case .check(let callID, let decoded, let repeated):
                #expect(callID == UInt64(index) && decoded == call.expected, "call \(index)")
                #expect(repeated == call.repeated, "call \(index)")
            case .invalidCheck(let callID, _):
                #expect(callID == UInt64(index) && call.expected == nil && call.method == Authorize.check.path)
            case .other:
                #expect(call.method != Authorize.check.path, "call \(index)")
            }
        }
    }

    /// The codec reuses the previous call's strings and packed reply when they repeat: a call
    /// that differs in one byte, one permission, their count or their order must still read and
    /// answer as itself, and a repeated one as the same.
    /// The codec reads a CheckRequest by hand (to reuse strings) beside the generated reader: a
    /// field added to proto/ must be added to `CheckCallCodec.read` too, or a Check would drop it.
    @Test func theHandReaderKnowsEveryFieldOfCheckRequest() {
        let fields = Mirror(reflecting: CheckRequest()).children.compactMap(\.label)
        #expect(fields == ["key", "permissions", "resource", "clientAddress"], "update CheckCallCodec.read")
    }

    @Test func whatIsReusedFromThePreviousCallNeverLeaksIntoTheNext() throws {
        let codec = CheckCallCodec()
        let requests = [
            CheckRequest(key: "dbm_aaaa", permissions: ["jobs:read", "vault:read"], resource: "GET /a"),
            CheckRequest(key: "dbm_aaaa", permissions: ["jobs:read", "vault:read"], resource: "GET /b"),
            CheckRequest(key: "dbm_aaab", permissions: ["jobs:read", "vault:reae"]),
            CheckRequest(key: "dbm_aaab", permissions: ["vault:reae", "jobs:read"]),
            CheckRequest(key: "dbm_aaab", permissions: ["vault:reae"]),
            CheckRequest(key: "dbm_aaab", permissions: ["vault:reae", "vault:reae", "x"]),
            CheckRequest(key: "dbm_aaa", permissions: []),
            CheckRequest(key: "", permissions: [""]),
            CheckRequest(key: "dbm_aaa", permissions: ["clé"]),
            CheckRequest(key: "dbm_aaa", permissions: ["clé"]),
            CheckRequest(key: "dbm_aaa", resource: "GET /a", clientAddress: "10.0.0.1"),
            CheckRequest(key: "dbm_aaa", resource: "GET /a", clientAddress: "10.0.0.1"),
            CheckRequest(key: "dbm_aaa", resource: "GET /a", clientAddress: "10.0.0.2"),
            CheckRequest(key: "dbm_aaa", resource: "GET /a/long/enough/for/the/heap", clientAddress: "10.0.0.2"),
            CheckRequest(key: "dbm_aaa", resource: "GET /a/long/enough/for/the/heap", clientAddress: ""),
            CheckRequest(key: "dbm_aaa", resource: "GET /a/long/enough/for/the/hea", clientAddress: ""),
        ]
        var previousPayload: [UInt8]?
        for (index, request) in requests.enumerated() {
            let payload = try request.serializedBytes()
            let check = Envelope(callID: UInt64(index), method: Authorize.check.path, payload: payload)
            guard case .check(let callID, let decoded, let repeated) = try codec.decode(frame: body(check)) else {
                Issue.record("call \(index) not decoded as a check")
                continue
            }
            #expect(callID == UInt64(index) && decoded == request, "call \(index)")
            #expect(repeated == (payload == previousPayload), "call \(index)")
            previousPayload = payload
        }
        // Canonically equivalent to the one before (so `==`), other bytes: read as sent.
        for (index, name) in ["caf\u{E9}", "cafe\u{301}", "caf\u{E9}"].enumerated() {
            let request = CheckRequest(
                key: "dbm_aaa", permissions: ["jobs:read", name], resource: name, clientAddress: name)
            let check = Envelope(callID: 50, method: Authorize.check.path, payload: try request.serializedBytes())
            guard case .check(_, let decoded, let repeated) = try codec.decode(frame: body(check)) else {
                Issue.record("call \(index) not decoded as a check")
                continue
            }
            #expect(!repeated, "call \(index)")
            #expect(decoded.permissions.map { Array($0.utf8) } == request.permissions.map { Array($0.utf8) })
            #expect(Array(decoded.resource.utf8) == Array(name.utf8), "call \(index)")
            #expect(Array(decoded.clientAddress.utf8) == Array(name.utf8), "call \(index)")
        }
        for (index, name) in ["caf\u{E9}", "cafe\u{301}"].enumerated() {
            let response = CheckResponse(
                decision: .deny, reason: .missingPermission, httpStatus: 403, keyID: "key_1", keyName: name,
                missingPermissions: [name])
            var buffer = ByteBuffer()
            try codec.writeCheckReply(callID: 60, response: response, to: &buffer)
            let frame = try #require(try FrameDecoder.nextFrame(in: &buffer, maxFrameSize: 1 << 20))
            let reply = try #require(try codec.decodeReply(frame: frame, payload: .full).check)
            #expect(Array(reply.keyName.utf8) == Array(name.utf8), "reply \(index)")
            #expect(reply.missingPermissions.map { Array($0.utf8) } == [Array(name.utf8)], "reply \(index)")
        }
        let responses = [
            CheckResponse(decision: .allow, httpStatus: 200, keyID: "key_1", keyName: "ci"),
            CheckResponse(decision: .allow, httpStatus: 200, keyID: "key_1", keyName: "ci"),
            CheckResponse(decision: .allow, httpStatus: 200, keyID: "key_2", keyName: "ci"),
            CheckResponse(decision: .allow, httpStatus: 200, keyID: "key_2", keyName: "ci", expiresAtMS: 9),
            CheckResponse(),
            CheckResponse(decision: .deny, reason: .disabled, httpStatus: 401, keyID: "key_2", keyName: "ci"),
        ]
        for (index, response) in responses.enumerated() {
            var buffer = ByteBuffer()
            try codec.writeCheckReply(callID: UInt64(100 + index), response: response, to: &buffer)
            let frame = try #require(try FrameDecoder.nextFrame(in: &buffer, maxFrameSize: 1 << 20))
            let reply = try codec.decodeReply(frame: frame, payload: .full)
            #expect(reply.callID == UInt64(100 + index) && reply.check == response, "reply \(index)")
        }
    }
}
