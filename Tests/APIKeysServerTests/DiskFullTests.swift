import APIKeysClient
import APIKeysCore
@_spi(Testing) import APIKeysStore
import Foundation
import Testing

/// A full disk: admin calls fail with a plain status and nothing half-written is acknowledged;
/// checks are still answered and audited once space returns; service resumes by itself.
@Suite struct DiskFullTests {
    @Test func aFullDiskRefusesCleanlyAndServiceResumesWhenSpaceReturns() async throws {
        try await withServer { server, client in
            let key = try await client.createKey(name: "before", permissions: ["jobs:read"])
            try server.server.service.simulateFullDisk(true)
            var acknowledged: Set<String> = ["before"]
            var refusals: [APIKeysClientError] = []
            for index in 0..<300 {
                do {
                    _ = try await client.createKey(name: "k\(index)", permissions: ["jobs:read"])
                    acknowledged.insert("k\(index)")
                } catch let error as APIKeysClientError {
                    refusals.append(error)
                }
            }
            let refusal = try #require(refusals.first, "300 keys fit without one new page: the test proved nothing")
            #expect(refusal.code == .resourceExhausted)
            #expect(refusal.message.contains("disk is full") && refusal.message.contains("(ref "))
            for error in refusals {
                #expect(!error.message.contains("/") && !error.message.contains("SQLite"), "\(error.message)")
            }
            // Checks are answered from memory meanwhile (~2 MB of audit events: more than fits).
            let resource = String(repeating: "r", count: 1000)
            for _ in 0..<2000 {
                let answer = try await client.check(key: key.secret, permissions: ["jobs:read"], resource: resource)
                #expect(answer.decision == .allow)
            }

            try server.server.service.simulateFullDisk(false)
            _ = try await client.createKey(name: "after", permissions: ["jobs:read"])
            acknowledged.insert("after")
            var names: Set<String> = []
            var token = ""
            repeat {
                let page = try await client.listKeys(pageSize: 1000, pageToken: token)
                names.formUnion(page.keys.map(\.name))
                token = page.nextPageToken
            } while !token.isEmpty
            #expect(names == acknowledged)
            // The checks made while the disk was full reach the trail once space is back.
            await server.server.service.flushAuditTrail()
            var audited = 0
            token = ""
            repeat {
                let page = try await client.listAuditEvents(
                    keyID: key.key.id, action: "api.request", pageSize: 1000, pageToken: token)
                audited += page.events.count
                token = page.nextPageToken
            } while !token.isEmpty
            #expect(audited == 2000)
        }
    }

    /// Connection failures in plain words, not NIO's nested error values, which stay as the cause.
    @Test func aServerThatIsNotThereIsSaidPlainly() async throws {
        let client = APIKeysClient(configuration: .init(port: 1, adminToken: "adm_x"))
        let error = await #expect(throws: APIKeysClientError.self) { _ = try await client.listPermissions() }
        #expect(
            error
                == APIKeysClientError(code: .unavailable, message: "cannot connect to 127.0.0.1:1: connection refused"))
        #expect(error?.cause != nil && !(error?.cause is APIKeysClientError))
        await client.close()
    }
}
