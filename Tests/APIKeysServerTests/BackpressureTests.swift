import APIKeysClient
@_spi(Testing) import APIKeysStore
import APIKeysTestSupport
import Foundation
import Testing

/// When the audit writer falls behind, the server stops reading instead of refusing checks; only a
/// queue that fills within one read is refused (UNAVAILABLE), and nothing goes unaudited.
@Suite struct BackpressureTests {
    private func burst(_ secret: String, callIDs: ClosedRange<UInt64>) throws -> [UInt8] {
        let request = try CheckRequest(key: secret, permissions: ["jobs:read"]).serializedBytes()
        return try callIDs.flatMap { callID in
            RawConnection.frame(
                try Envelope(callID: callID, method: Authorize.check.path, payload: request).serializedBytes())
        }
    }

    /// Runs `body` against a server whose audit queue holds 10 events and whose writer is stalled
    /// (its disk held by `valve`, with one check waiting in the held write and its queue empty),
    /// with a key's secret and a raw connection.
    private func withStalledWriter(
        _ body: (KeyService, APIKeysClient, String, RawConnection, AuditSinkValve) async throws -> Void
    ) async throws {
        let valve = AuditSinkValve()
        try await withServer(configure: {
            $0.auditQueueCapacity = 10
            $0.decorateAuditSink = valve.decorator
        }) { server, client in
            let secret = try await client.createKey(name: "busy", permissions: ["jobs:read"]).secret
            valve.hold()
            _ = try await client.check(key: secret, permissions: ["jobs:read"])
            try #require(valve.waitForAHeldWrite())
            let connection = try RawConnection(port: server.port, receiveTimeoutSeconds: 20)
            try await body(server.server.service, client, secret, connection, valve)
        }
    }

    /// Every api.request event committed once the writer has caught up, but the check that
    /// stalled it.
    private func auditedChecks(_ service: KeyService, _ client: APIKeysClient) async throws -> Int {
        await service.flushAuditTrail()
        return try await client.listAuditEvents(action: "api.request", pageSize: 100).events.count - 1
    }

    @Test(.timeLimit(.minutes(1)))
    func aStalledAuditWriterSlowsReadersDownInsteadOfRefusingChecks() async throws {
        try await withStalledWriter { service, client, secret, connection, valve in
            // 6 checks: the queue holds 6 of 10, more than half, so the server stops reading.
            connection.send(try burst(secret, callIDs: 1...6))
            for _ in 1...6 { #expect(try connection.receiveEnvelope()?.status == .ok) }
            // 6 more would overflow the queue; they wait unread in the socket instead: no answer
            // (neither OK nor UNAVAILABLE) comes while the writer stays stalled.
            connection.send(try burst(secret, callIDs: 7...12))
            #expect(!connection.hasBytesToRead(waitingMS: 500), "the server answered checks it could not audit")
            valve.release()
            var statuses: [UInt64: StatusCode] = [:]
            for _ in 7...12 {
                let reply = try #require(try connection.receiveEnvelope())
                statuses[reply.callID] = reply.status
            }
            #expect(statuses.count == 6 && statuses.values.allSatisfy { $0 == .ok })
            #expect(try await auditedChecks(service, client) == 12)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aFloodBeyondTheQueueIsRefusedOrAuditedNeverAnsweredUnaudited() async throws {
        try await withStalledWriter { service, client, secret, connection, valve in
            // 15 frames in one send: read at once, the last 5 find the queue full and fail closed.
            // (Should the kernel split them over reads, backpressure holds the rest until the
            // writer resumes below.)
            connection.send(try burst(secret, callIDs: 1...15))
            let resume = Task {
                try await Task.sleep(for: .seconds(1))
                valve.release()
            }
            var replies: [Envelope] = []
            for _ in 1...15 { replies.append(try #require(try connection.receiveEnvelope())) }
            try await resume.value
            let accepted = replies.filter { $0.status == .ok }.count
            let refused = replies.filter { $0.status == .unavailable }
            #expect(accepted + refused.count == 15)
            #expect(!refused.isEmpty, "nothing was refused: the queue never overflowed and the test proved nothing")
            #expect(refused.allSatisfy { $0.statusMessage.contains("audit") })

            #expect(try await auditedChecks(service, client) == accepted)
        }
    }
}
