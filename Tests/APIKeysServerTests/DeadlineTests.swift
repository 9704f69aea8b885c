import APIKeysClient
import APIKeysCore
import Foundation
import Testing

/// A DEADLINE_EXCEEDED reply means nothing was changed; a call that committed gets its real reply.
@Suite struct DeadlineTests {
    /// Rotations with a 1 ms deadline: each answer is either the new secret (the old one is dead)
    /// or DEADLINE_EXCEEDED (the old one still works). Never a rotation nobody was told about.
    /// Every other rotation waits behind a pipelined burst of CreateKeys on another connection,
    /// so that both answers are seen.
    @Test func aRotateAnsweredDeadlineExceededDidNotRotate() async throws {
        try await withServer { server, client in
            var secret = try await client.createKey(name: "r", permissions: ["jobs:read"]).secret
            let id = try await client.listKeys().keys[0].id
            let busy = try RawConnection(port: server.port, receiveTimeoutSeconds: 30)
            var outcomes: [StatusCode: Int] = [:]
            for round in 0..<40 {
                let queued = round % 2 == 0 ? 20 : 0
                if queued > 0 { busy.send(try Self.createKeyBurst(server, count: queued, prefix: "busy\(round)-")) }
                do {
                    let rotated = try await client.rotateKey(id: id, timeout: .milliseconds(1))
                    outcomes[.ok, default: 0] += 1
                    #expect(try await client.check(key: secret).decision == .deny)
                    secret = rotated.secret
                } catch let error as APIKeysClientError {
                    outcomes[error.code, default: 0] += 1
                    #expect(error.code == .deadlineExceeded)
                }
                for _ in 0..<queued { #expect(try busy.receiveEnvelope()?.status == .ok) }
                #expect(try await client.check(key: secret).decision == .allow, "the secret last handed out is dead")
            }
            #expect(outcomes.values.reduce(0, +) == 40)
            #expect(outcomes[.deadlineExceeded, default: 0] > 0, "no rotation was late: the test proved nothing")
            #expect(outcomes[.ok, default: 0] > 0, "no rotation was in time: the test proved nothing")
        }
    }

    /// `count` CreateKey frames in one buffer, for a raw connection to pipeline.
    static func createKeyBurst(
        _ server: TestServer, count: Int, prefix: String, timeoutMS: (Int) -> UInt32 = { _ in 0 }
    )
        throws -> [UInt8]
    {
        var burst: [UInt8] = []
        for call in 1...count {
            burst += RawConnection.frame(
                try Envelope(
                    callID: UInt64(call), method: KeyAdmin.createKey.path,
                    payload: try CreateKeyRequest(name: "\(prefix)\(call)", permissions: ["jobs:read"])
                        .serializedBytes(),
                    metadata: ["authorization": "Bearer \(server.adminToken)"], timeoutMS: timeoutMS(call)
                ).serializedBytes())
        }
        return burst
    }

    /// Pipelined CreateKeys (60, within the in-flight limit) with deadlines of 1–3 ms: the keys that exist afterwards are exactly
    /// the ones whose reply was OK.
    @Test func createsAnsweredDeadlineExceededLeaveNoKey() async throws {
        try await withServer { server, client in
            let connection = try RawConnection(port: server.port, receiveTimeoutSeconds: 30)
            let burst = try Self.createKeyBurst(server, count: 60, prefix: "d") { UInt32(1 + $0 % 3) }
            connection.send(burst)
            var answered: [String: StatusCode] = [:]
            for _ in 1...60 {
                let reply = try #require(try connection.receiveEnvelope())
                answered["d\(reply.callID)"] = reply.status
            }
            #expect(answered.count == 60)
            #expect(Set(answered.values).isSubset(of: [.ok, .deadlineExceeded]))
            let existing = Set(try await client.listKeys(pageSize: 1000).keys.map(\.name))
            let acknowledged = Set(answered.filter { $0.value == .ok }.keys)
            #expect(existing == acknowledged)
            #expect(answered.values.contains(.deadlineExceeded), "no call was late: the test proved nothing")
        }
    }
}
