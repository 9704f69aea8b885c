import APIKeysClient
import APIKeysCore
import Foundation
import Testing

/// What an unauthenticated caller can make the audit trail store is bounded, and every page of
/// the trail fits in what the client accepts.
@Suite struct AuditAmplificationTests {
    @Test func oversizedCheckFieldsAreRefusedNamingTheField() async throws {
        try await withServer { _, client in
            let key = SecretFormat.standard.generate()
            for (permissions, address, field) in [
                (Array(repeating: "jobs:read", count: 65), "", "permissions"),
                ([String(repeating: "p", count: 65)], "", "permissions"),
                (["jobs:read"], String(repeating: "1", count: 65), "client_address"),
            ] {
                await #expect {
                    _ = try await client.check(key: key, permissions: permissions, clientAddress: address)
                } throws: { error in
                    let error = error as? APIKeysClientError
                    return error?.code == .invalidArgument && error?.message.hasPrefix(field) == true
                }
            }
            // Past 160 fields the wire layer refuses the request before unpacking it.
            await #expect {
                _ = try await client.check(key: key, permissions: Array(repeating: "jobs:read", count: 161))
            } throws: { error in
                let error = error as? APIKeysClientError
                return error?.code == .invalidArgument && error?.message.contains("more than 160 fields") == true
            }
            // At the limits, a check is answered.
            let answer = try await client.check(
                key: key, permissions: Array(repeating: "jobs:read", count: 64),
                clientAddress: String(repeating: "1", count: 64))
            #expect(answer.decision == .deny && answer.reason == .unknownKey)
        }
    }

    @Test func hugeResourcesAreStoredCutAndPagesStayWithinTheByteBudget() async throws {
        try await withServer { server, client in
            let resource = "GET /" + String(repeating: "é", count: 30_000)  // 60,005 bytes
            let checks = 900
            // A real key's checks: each is one event (unknown keys' are sampled, see AuditFloodTests).
            let key = try await client.createKey(name: "long-urls", permissions: ["jobs:read"]).secret
            for _ in 0..<checks {
                _ = try await client.check(key: key, resource: resource)
            }
            await server.server.service.flushAuditTrail()
            let first = try await client.listAuditEvents(action: "api.request", pageSize: 1000)
            let event = try #require(first.events.first)
            #expect(event.resource.utf8.count <= CheckLimits.maxResourceBytes)
            let kept = event.resource.prefix { $0 != "…" }.utf8.count
            #expect(event.resource.hasSuffix("…[+\(60_005 - kept) bytes]"))
            #expect(resource.hasPrefix(String(event.resource.prefix { $0 != "…" })))
            // ~1.1 KB an event: 900 of them are more than one page's byte budget.
            #expect(first.events.count < checks && !first.nextPageToken.isEmpty)
            var total = first.events.count
            var token = first.nextPageToken
            while !token.isEmpty {
                let page = try await client.listAuditEvents(action: "api.request", pageSize: 1000, pageToken: token)
                total += page.events.count
                token = page.nextPageToken
            }
            #expect(total == checks)
        }
    }
}
