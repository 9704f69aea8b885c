import APIKeysClient
import Foundation
import Testing

/// Every bad-input case of the contract, on a real socket: the server answers precisely, closes
/// only the offending connection, and keeps serving.
@Suite struct BadInputTests {
    private func checkEnvelope(callID: UInt64, key: String = "dbm_x") throws -> Envelope {
        Envelope(callID: callID, method: Authorize.check.path, payload: try CheckRequest(key: key).serializedBytes())
    }

    /// The server still answers a good call on a new connection.
    private func expectServerAlive(_ server: TestServer) async throws {
        let client = server.client()
        #expect(try await client.listPermissions().count == 10)
        await client.close()
    }

    @Test func zeroLengthFrameClosesTheConnection() async throws {
        try await withServer { server, _ in
            let connection = try RawConnection(port: server.port)
            connection.send([0, 0, 0, 0])
            #expect(connection.isClosedByPeer())
            try await expectServerAlive(server)
        }
    }

    @Test func oversizeFrameGetsResourceExhaustedThenClose() async throws {
        try await withServer(configure: { $0.maxFrameSize = 1024 }) { server, _ in
            let connection = try RawConnection(port: server.port)
            connection.send([0, 0, 4, 1])  // 1025 bytes announced; the body never needs to arrive
            let reply = try #require(try connection.receiveEnvelope())
            #expect(reply.status == .resourceExhausted)
            #expect(reply.statusMessage.contains("1025"))
            #expect(connection.isClosedByPeer())
            try await expectServerAlive(server)
        }
    }

    @Test func bytesThatAreNotAnEnvelopeCloseTheConnection() async throws {
        try await withServer { server, _ in
            let connection = try RawConnection(port: server.port)
            connection.send(RawConnection.frame([0xFF, 0xFF, 0xFF, 0xFF, 0xFF]))
            #expect(connection.isClosedByPeer())
            try await expectServerAlive(server)
        }
    }

    @Test func unknownMethodIsUnimplementedAndTheConnectionStays() async throws {
        try await withServer { server, _ in
            let connection = try RawConnection(port: server.port)
            try connection.send(Envelope(callID: 7, method: "/apikeys.v1.KeyAdmin/Explode"))
            let reply = try #require(try connection.receiveEnvelope())
            #expect(reply.callID == 7 && reply.status == .unimplemented)
            #expect(reply.statusMessage.contains("Explode"))
            try connection.send(try checkEnvelope(callID: 8))
            let next = try #require(try connection.receiveEnvelope())
            #expect(next.callID == 8 && next.status == .ok)
        }
    }

    @Test func payloadThatIsNotTheRequestIsInvalidArgument() async throws {
        try await withServer { server, _ in
            let connection = try RawConnection(port: server.port)
            try connection.send(Envelope(callID: 1, method: Authorize.check.path, payload: [0xFF, 0x01]))
            let reply = try #require(try connection.receiveEnvelope())
            #expect(reply.callID == 1 && reply.status == .invalidArgument)
            // Admin: authentication comes first, then the payload.
            let token = server.adminToken
            try connection.send(
                Envelope(
                    callID: 2, method: KeyAdmin.createKey.path, payload: [0x0A, 0x05, 0x61],
                    metadata: ["authorization": "Bearer \(token)"]))
            let admin = try #require(try connection.receiveEnvelope())
            #expect(admin.callID == 2 && admin.status == .invalidArgument)
            try connection.send(try checkEnvelope(callID: 3))
            #expect(try connection.receiveEnvelope()?.status == .ok)
        }
    }

    @Test func nameWithNULOrInvalidUTF8IsInvalidArgument() async throws {
        try await withServer { server, client in
            let connection = try RawConnection(port: server.port)
            let auth = ["authorization": "Bearer \(server.adminToken)"]
            // CreateKeyRequest{name: "a\0b", permissions: ["jobs:read"]}, written by hand: protobuf-c cannot.
            let withNUL: [UInt8] = [0x0A, 3, 0x61, 0, 0x62, 0x12, 9] + Array("jobs:read".utf8)
            try connection.send(
                Envelope(callID: 1, method: KeyAdmin.createKey.path, payload: withNUL, metadata: auth))
            let reply = try #require(try connection.receiveEnvelope())
            #expect(reply.status == .invalidArgument && reply.statusMessage.contains("name"))
            let badUTF8: [UInt8] = [0x0A, 2, 0xC3, 0x28, 0x12, 9] + Array("jobs:read".utf8)
            try connection.send(
                Envelope(callID: 2, method: KeyAdmin.createKey.path, payload: badUTF8, metadata: auth))
            let second = try #require(try connection.receiveEnvelope())
            #expect(second.status == .invalidArgument && second.statusMessage.contains("name"))
            let keys = try await client.listKeys().keys
            #expect(keys.isEmpty)
        }
    }

    @Test func splitFramesAreReassembled() async throws {
        try await withServer { server, _ in
            let connection = try RawConnection(port: server.port)
            let bytes = RawConnection.frame(try checkEnvelope(callID: 42).serializedBytes())
            for byte in bytes { connection.send([byte]) }
            let reply = try #require(try connection.receiveEnvelope())
            #expect(reply.callID == 42)
            #expect(try CheckResponse(serializedBytes: reply.payload).reason == .malformedKey)
        }
    }

    @Test func adminCallPastItsDeadlineGetsDeadlineExceededOnce() async throws {
        try await withServer { server, _ in
            let connection = try RawConnection(port: server.port, receiveTimeoutSeconds: 30)
            // Behind 30 pipelined CreateKeys (no deadline), one with a 1 ms deadline: it reaches
            // the store late, and is answered DEADLINE_EXCEEDED, exactly once.
            var burst = try DeadlineTests.createKeyBurst(server, count: 30, prefix: "ahead")
            burst += RawConnection.frame(
                try Envelope(
                    callID: 99, method: KeyAdmin.createKey.path,
                    payload: try CreateKeyRequest(name: "late", permissions: ["jobs:read"]).serializedBytes(),
                    metadata: ["authorization": "Bearer \(server.adminToken)"], timeoutMS: 1
                ).serializedBytes())
            connection.send(burst)
            var replies: [UInt64: [StatusCode]] = [:]
            for _ in 0..<31 {
                let reply = try #require(try connection.receiveEnvelope())
                replies[reply.callID, default: []].append(reply.status)
            }
            #expect(replies[99] == [.deadlineExceeded])
            #expect((1...30).allSatisfy { replies[UInt64($0)] == [.ok] })
            try connection.send(try checkEnvelope(callID: 100))
            #expect(try connection.receiveEnvelope()?.callID == 100)
        }
    }

    @Test func adminCallsBeyondTheInFlightLimitAreRefused() async throws {
        try await withServer(configure: { $0.maxAdminCallsInFlight = 1 }) { server, _ in
            let connection = try RawConnection(port: server.port)
            var burst: [UInt8] = []
            for callID in 1...20 {
                burst += RawConnection.frame(
                    try Envelope(
                        callID: UInt64(callID), method: KeyAdmin.listPermissions.path,
                        metadata: ["authorization": "Bearer \(server.adminToken)"]
                    ).serializedBytes())
            }
            connection.send(burst)
            var statuses: [UInt64: StatusCode] = [:]
            for _ in 1...20 {
                let reply = try #require(try connection.receiveEnvelope())
                #expect(statuses.updateValue(reply.status, forKey: reply.callID) == nil)
            }
            #expect(statuses.count == 20)
            #expect(statuses[1] == .ok)
            #expect(statuses.values.contains(.resourceExhausted))
        }
    }

    @Test func idleConnectionsAreClosed() async throws {
        try await withServer(configure: { $0.idleTimeoutSeconds = 1 }) { server, _ in
            let connection = try RawConnection(port: server.port, receiveTimeoutSeconds: 5)
            #expect(connection.isClosedByPeer())
        }
    }
}
