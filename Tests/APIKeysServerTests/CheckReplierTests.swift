import APIKeysCore
import APIKeysSQLite
import APIKeysServer
import APIKeysStore
import APIKeysTestSupport
import APIKeysWire
import NIOCore
import Testing

/// ``CheckReplier`` repeats the previous reply's bytes only for a check answered exactly alike:
/// every reply it writes reads back as the reply to that check's own outcome, whatever came
/// before it on the connection, and under its own call id.
@Suite struct CheckReplierTests {
    /// What a reply says, the names as their bytes.
    struct Said: Equatable {
        var callID: UInt64
        var decision: Decision
        var reason: DenyReason
        var keyID: String
        var keyName: [UInt8]
        var missing: [[UInt8]]
        var retryAfterMS: Int64
    }

    /// Sends `request` to `replier` as a client's frame (decoded by its codec, which says whether
    /// it repeats the previous request) and reads the one frame it wrote back.
    private func answer(_ replier: CheckReplier, callID: UInt64, _ request: CheckRequest) throws -> Said {
        let (decodedID, decoded, repeated) = try decode(replier, callID: callID, request)
        var buffer = ByteBuffer()
        try replier.answer(callID: decodedID, decoded, repeated: repeated, tally: nil, to: &buffer)
        let length = buffer.readInteger(endianness: .big, as: UInt32.self) ?? 0
        let frame = buffer.readSlice(length: Int(length)) ?? ByteBuffer()
        #expect(buffer.readableBytes == 0)
        let reply = try CheckCallCodec().decodeReply(frame: frame, payload: .full)
        #expect(reply.status == .ok)
        let check = try #require(reply.check)
        return Said(
            callID: reply.callID, decision: check.decision, reason: check.reason, keyID: check.keyID,
            keyName: Array(check.keyName.utf8), missing: check.missingPermissions.map { Array($0.utf8) },
            retryAfterMS: check.retryAfterMS)
    }

    /// `request` as a client's frame, decoded by `replier`'s codec: its call id, the request, and
    /// whether the codec took it for a repeat of the previous one.
    private func decode(_ replier: CheckReplier, callID: UInt64, _ request: CheckRequest) throws
        -> (callID: UInt64, request: CheckRequest, repeated: Bool)
    {
        let call = ByteBuffer(
            bytes: try Envelope(callID: callID, method: Authorize.check.path, payload: request.serializedBytes())
                .serializedBytes())
        guard case .check(let decodedID, let decoded, let repeated) = try replier.codec.decode(frame: call) else {
            throw WireError.malformedMessage(message: "apikeys.v1.CheckRequest")
        }
        return (decodedID, decoded, repeated)
    }

    @Test func aRepeatedReplyIsOnlyEverTheReplyToItsOwnCheck() async throws {
        try await withTemporaryDirectory { dir in
            let service = try KeyService.open(path: dir + "/keys.db")
            let name = "caf\u{E9}"
            let renamed = "caf\u{E9} au lait"
            let issued = try await service.createKey(
                name: name, permissions: ["jobs:read"], rateLimit: KeyRateLimit(requests: 3, periodSeconds: 60),
                actor: "ops")
            let other = try await service.createKey(name: "other", permissions: ["jobs:read"], actor: "ops")
            let replier = CheckReplier(service: service)
            let read = CheckRequest(key: issued.secret, permissions: ["jobs:read"])
            func allowed(_ callID: UInt64, name: String, id: String = issued.key.id) -> Said {
                Said(
                    callID: callID, decision: .allow, reason: .unspecified, keyID: id, keyName: Array(name.utf8),
                    missing: [], retryAfterMS: 0)
            }

            #expect(try answer(replier, callID: 1, read) == allowed(1, name: name))
            #expect(try answer(replier, callID: 2, read) == allowed(2, name: name))
            // Renamed: the reply carries the new name.
            _ = try await service.updateKey(id: issued.key.id, name: renamed, actor: "ops")
            #expect(try answer(replier, callID: 3, read) == allowed(3, name: renamed))
            // The rate limit (3 a minute) is spent: denied, with a retry.
            let limited = try answer(replier, callID: 4, read)
            #expect(limited.decision == .deny && limited.reason == .rateLimited && limited.retryAfterMS > 0)
            #expect(limited.callID == 4 && limited.keyName == Array(renamed.utf8))
            // Another key's secret on the same connection.
            let otherRead = CheckRequest(key: other.secret, permissions: ["jobs:read"])
            #expect(
                try answer(replier, callID: 5, otherRead)
                    == allowed(5, name: "other", id: other.key.id))
            // Missing permissions are never repeated from the one before: each names its own.
            for (callID, wanted) in [(UInt64(6), "vault:read"), (7, "jobs:write"), (8, "jobs:write")] {
                let said = try answer(
                    replier, callID: callID, CheckRequest(key: other.secret, permissions: [wanted]))
                #expect(said.reason == .missingPermission && said.missing == [Array(wanted.utf8)])
                #expect(said.callID == callID)
            }
            // The same request again and again (prepared once), while the key's grants change.
            let both = CheckRequest(key: other.secret, permissions: ["jobs:write", "jobs:read", "jobs:write", "x:y"])
            for callID in UInt64(20)...21 {
                let said = try answer(replier, callID: callID, both)
                #expect(said.reason == .missingPermission && said.callID == callID)
                #expect(said.missing == [Array("jobs:write".utf8), Array("x:y".utf8)])
            }
            let bothKnown = CheckRequest(key: other.secret, permissions: ["jobs:write", "jobs:read"])
            #expect(try answer(replier, callID: 22, bothKnown).missing == [Array("jobs:write".utf8)])
            _ = try await service.updateKey(id: other.key.id, permissions: ["jobs:read", "jobs:write"], actor: "ops")
            for callID in UInt64(23)...24 {
                #expect(
                    try answer(replier, callID: callID, bothKnown)
                        == allowed(callID, name: "other", id: other.key.id))
            }
            let withUnknown = CheckRequest(key: other.secret, permissions: ["jobs:read", "no:such"])
            for callID in UInt64(26)...27 {
                #expect(
                    try answer(replier, callID: callID, withUnknown).missing == [
                        Array("no:such".utf8)
                    ])
            }
            _ = try await service.updateKey(id: other.key.id, permissions: ["jobs:write"], actor: "ops")
            #expect(try answer(replier, callID: 28, bothKnown).missing == [Array("jobs:read".utf8)])
            // A refused request is refused again when repeated (nothing prepared is kept from it),
            // and the request before it is not taken for it.
            let refused = CheckRequest(key: other.secret, permissions: ["jobs:read"], resource: "GET /\u{1B}[2J")
            for callID in UInt64(30)...31 {
                var buffer = ByteBuffer()
                let (_, decoded, repeated) = try decode(replier, callID: callID, refused)
                #expect(repeated == (callID == 31))
                #expect(throws: KeyError.self) {
                    try replier.answer(callID: callID, decoded, repeated: repeated, tally: nil, to: &buffer)
                }
                #expect(buffer.readableBytes == 0)
            }
            // Disabled: the same key, another answer.
            _ = try await service.setEnabled(id: other.key.id, enabled: false, actor: "ops")
            let disabled = try answer(replier, callID: 9, otherRead)
            #expect(disabled.decision == .deny && disabled.reason == .disabled && disabled.callID == 9)
            let unknown = CheckRequest(key: SecretFormat.standard.generate(), permissions: ["jobs:read"])
            for callID in UInt64(10)...11 {
                let said = try answer(replier, callID: callID, unknown)
                #expect(said.reason == .unknownKey && said.keyID.isEmpty && said.callID == callID)
            }
            await service.close(timeout: .seconds(10))
        }
    }
}
