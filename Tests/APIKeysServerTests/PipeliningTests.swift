import APIKeysClient
import Foundation
import Testing

@Suite struct PipeliningTests {
    @Test func thousandPipelinedChecksOnOneConnectionEachAnsweredOnce() async throws {
        try await withServer { server, client in
            let created = try await client.createKey(name: "pipe", permissions: ["jobs:read"])
            let connection = try RawConnection(port: server.port)
            var burst: [UInt8] = []
            for callID in 1...1000 {
                let permissions = callID % 2 == 0 ? ["jobs:read"] : ["vault:read"]
                let request = try CheckRequest(key: created.secret, permissions: permissions).serializedBytes()
                burst += RawConnection.frame(
                    try Envelope(callID: UInt64(callID), method: Authorize.check.path, payload: request)
                        .serializedBytes())
            }
            connection.send(burst)
            var answered: [UInt64: Int] = [:]
            for _ in 1...1000 {
                let reply = try #require(try connection.receiveEnvelope())
                let answer = try CheckResponse(serializedBytes: reply.payload)
                #expect(answer.decision == (reply.callID % 2 == 0 ? .allow : .deny))
                answered[reply.callID, default: 0] += 1
            }
            #expect(answered.count == 1000 && answered.values.allSatisfy { $0 == 1 })
        }
    }

    @Test func oneClientCarriesManyConcurrentCalls() async throws {
        try await withServer { _, client in
            let created = try await client.createKey(name: "concurrent", permissions: ["jobs:read"])
            let decisions = try await withThrowingTaskGroup(of: Decision.self) { group in
                for index in 0..<200 {
                    group.addTask {
                        if index % 10 == 0 { _ = try await client.listPermissions() }
                        return try await client.check(key: created.secret, permissions: ["jobs:read"]).decision
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(decisions.count == 200 && decisions.allSatisfy { $0 == .allow })
        }
    }
}
