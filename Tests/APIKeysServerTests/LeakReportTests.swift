import APIKeysClient
import APIKeysCore
import APIKeysTestSupport
import Foundation
import Testing

/// ReportLeakedKey through the real server: no admin token, the key disabled before the answer,
/// the report in the audit trail with the reporter's address, and one answer for every secret.
@Suite struct LeakReportTests {
    @Test func aReportedSecretIsDisabledAtOnceAndEveryReportIsAnsweredAlike() async throws {
        try await withServer { server, admin in
            let leaked = try await admin.createKey(name: "pipeline", permissions: ["jobs:read"])
            let rotated = try await admin.createKey(name: "rotated", permissions: ["jobs:read"])
            let rotatedAway = rotated.secret
            _ = try await admin.rotateKey(id: rotated.key.id)

            // A reporter holds no admin token.
            let reporter = APIKeysClient(configuration: .init(port: server.port, adminToken: nil))
            defer { Task { await reporter.close() } }
            try await reporter.reportLeakedKey(
                "Bearer " + leaked.secret, source: "https://example.com/acme/ci/blob/main/deploy.sh")
            let afterwards = try await reporter.check(key: leaked.secret, permissions: ["jobs:read"])
            #expect(afterwards.decision == .deny && afterwards.reason == .disabled)
            #expect(try await admin.getKey(id: leaked.key.id).enabled == false)

            // Known, already disabled, rotated away, unknown, malformed: the same empty answer.
            try await reporter.reportLeakedKey(leaked.secret, source: "a second find")
            try await reporter.reportLeakedKey(rotatedAway)
            try await reporter.reportLeakedKey(server.server.service.format.generate())
            try await reporter.reportLeakedKey("not a key at all")
            // A rotated-away secret is dead already: its key (now on a new secret) stays enabled.
            #expect(try await admin.getKey(id: rotated.key.id).enabled)

            let reports = try await admin.listAuditEvents(action: "key.leak_reported").events
            #expect(reports.count == 2, "the unknown, malformed and rotated-away secrets record nothing")
            #expect(reports.allSatisfy { $0.keyID == leaked.key.id && $0.actor == "leak report" })
            #expect(reports.allSatisfy { $0.clientAddress == "127.0.0.1" })
            #expect(reports.map(\.resource) == ["a second find", "https://example.com/acme/ci/blob/main/deploy.sh"])
            #expect(reports.map(\.detail) == ["reported leaked; already disabled", "reported leaked; disabled"])

            // The token-less route is ReportLeakedKey's alone: KeyAdmin still needs a token.
            let refused = await #expect(throws: APIKeysClientError.self) { _ = try await reporter.listKeys() }
            #expect(refused?.code == .unauthenticated)
        }
    }
}
