import APIKeysClient
import APIKeysCore
import APIKeysStore
import APIKeysTestSupport
import Foundation
import Testing

/// `--max-key-lifetime` through the real server, and `apikey report` over it.
@Suite struct KeyPolicyTests {
    static let day: Int64 = 86_400_000

    @Test func keysMustExpireWithinTheMaximumLifetime() async throws {
        try await withServer(configure: { $0.maxKeyLifetimeSeconds = 90 * 86400 }) { server, client in
            let now = server.clock.nowMS()
            #expect(try await client.getPolicy().maxKeyLifetimeMS == 90 * Self.day)
            for expiry in [Int64(0), now + 91 * Self.day] {
                let refused = await #expect(throws: APIKeysClientError.self) {
                    _ = try await client.createKey(name: "k", permissions: ["jobs:read"], expiresAtMS: expiry)
                }
                #expect(refused?.code == .invalidArgument)
                #expect(
                    refused?.message.hasPrefix("expires_at_ms: this server requires keys to expire within 90d") == true)
            }
            let issued = try await client.createKey(
                name: "k", permissions: ["jobs:read"], expiresAtMS: now + 90 * Self.day)
            // An update may not clear the expiry or push it beyond the lifetime from now; within it, it may.
            await #expect(throws: APIKeysClientError.self) {
                _ = try await client.updateKey(id: issued.key.id, expiresAtMS: 0)
            }
            await #expect(throws: APIKeysClientError.self) {
                _ = try await client.updateKey(id: issued.key.id, expiresAtMS: now + 100 * Self.day)
            }
            let renewed = try await client.updateKey(id: issued.key.id, expiresAtMS: now + 30 * Self.day)
            #expect(renewed.expiresAtMS == now + 30 * Self.day)
        }
    }

    /// A key made before the policy, an unused one, one about to expire: each listed with its
    /// findings by `apikey report --json`, and a key in good order not at all.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: CommandLineTests.binary.path)))
    func theReportListsKeysThatNeedALook() async throws {
        let dir = try makeTemporaryDirectory("apikeyd-policy")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clock = ManualWallClock(nowMS: Int64(Date().timeIntervalSince1970 * 1000))
        let before = try await TestServer.start(dataDirectory: dir, clock: clock)
        let legacy = try await before.client().createKey(name: "legacy", permissions: ["jobs:read"])
        await before.server.shutdown()

        let server = try await TestServer.start(dataDirectory: dir, clock: clock) {
            $0.maxKeyLifetimeSeconds = 90 * 86400
        }
        defer { Task { await server.server.shutdown() } }
        let client = server.client()
        defer { Task { await client.close() } }
        let now = clock.nowMS()
        let soon = try await client.createKey(name: "soon", permissions: ["jobs:read"], expiresAtMS: now + 3 * Self.day)
        let fine = try await client.createKey(
            name: "fine", permissions: ["jobs:read"], expiresAtMS: now + 60 * Self.day)
        for secret in [legacy.secret, soon.secret, fine.secret] { _ = try await client.check(key: secret) }
        await server.server.service.flushAuditTrail()
        let unused = try await client.createKey(
            name: "unused", permissions: ["jobs:read"], expiresAtMS: now + 60 * Self.day)

        let run = try await runCommand(
            CommandLineTests.binary, ["report", "--json", "--expiring-days", "7"],
            environment: ["APIKEY_SERVER": "127.0.0.1:\(server.port)", "APIKEY_TOKEN_FILE": dir + "/admin.token"])
        #expect(run.status == 0, "\(run.stderr)")
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [[String: Any]])
        var findings: [String: [String]] = [:]
        for row in rows {
            let key = try #require(row["key"] as? [String: Any])
            findings[key["id"] as? String ?? ""] = row["findings"] as? [String]
        }
        #expect(
            findings == [
                legacy.key.id: ["expiry-beyond-policy"], soon.key.id: ["expiring-soon"], unused.key.id: ["never-used"],
            ])
        #expect(findings[fine.key.id] == nil)
    }

    /// `apikey rotate --grace 1h --json` over the real server, then checks through the client:
    /// both secrets work for the hour, the old one's checks are marked in the audit trail, and
    /// the old one is refused the moment the hour is over. A grace beyond 7 days is refused.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: CommandLineTests.binary.path)))
    func rotationWithAGracePeriodThroughTheServerAndTheCommandLine() async throws {
        try await withServer { server, client in
            let issued = try await client.createKey(name: "deployer", permissions: ["jobs:execute"])
            let environment = [
                "APIKEY_SERVER": "127.0.0.1:\(server.port)", "APIKEY_TOKEN_FILE": server.dataDirectory + "/admin.token",
            ]
            let run = try await runCommand(
                CommandLineTests.binary, ["rotate", issued.key.id, "--grace", "1h", "--json"], environment: environment)
            #expect(run.status == 0, "\(run.stderr)")
            let printed = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
            let newSecret = try #require(printed["secret"] as? String)
            let key = try #require(printed["key"] as? [String: Any])
            let graceEnd = server.clock.nowMS() + 3_600_000
            #expect((key["grace_ends_at_ms"] as? NSNumber)?.int64Value == graceEnd)
            #expect(try await client.getKey(id: issued.key.id).graceEndsAtMS == graceEnd)

            #expect(try await client.check(key: issued.secret, permissions: ["jobs:execute"]).decision == .allow)
            #expect(try await client.check(key: newSecret, permissions: ["jobs:execute"]).decision == .allow)
            server.clock.advance(byMS: 3_600_000)
            let late = try await client.check(key: issued.secret, permissions: ["jobs:execute"])
            #expect(late.decision == .deny)
            #expect(late.reason == .unknownKey)
            #expect(late.httpStatus == 401)
            #expect(try await client.check(key: newSecret, permissions: ["jobs:execute"]).decision == .allow)

            await server.server.service.flushAuditTrail()
            let checks = try await client.listAuditEvents(keyID: issued.key.id, action: "api.request").events
            #expect(checks.map(\.detail) == ["", "", KeyService.graceSecretDetail])

            let refused = try await runCommand(
                CommandLineTests.binary, ["rotate", issued.key.id, "--grace", "8d"], environment: environment)
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("grace_seconds"), "\(refused.stderr)")
            #expect(try await client.getKey(id: issued.key.id).hint == String(newSecret.prefix(8)) + "…")
        }
    }

    @Test func findingsFollowTheCriteria() {
        let now: Int64 = 1_000 * Self.day
        let criteria = KeyHygiene.Criteria(
            nowMS: now, idleMS: 30 * Self.day, expiringMS: 7 * Self.day, maxLifetimeMS: 90 * Self.day)
        func key(created: Int64, used: Int64 = 0, expires: Int64 = 0) -> ApiKey {
            ApiKey(
                id: "k", createdAtMS: now - created * Self.day,
                expiresAtMS: expires == 0 ? 0 : now + expires * Self.day,
                lastUsedAtMS: used == 0 ? 0 : now - used * Self.day)
        }
        #expect(KeyHygiene.findings(for: key(created: 10, used: 1, expires: 60), criteria) == [])
        #expect(KeyHygiene.findings(for: key(created: 10, expires: 60), criteria) == [.neverUsed])
        #expect(KeyHygiene.findings(for: key(created: 40, used: 30, expires: 60), criteria) == [.idle])
        #expect(KeyHygiene.findings(for: key(created: 10, used: 1, expires: 7), criteria) == [.expiringSoon])
        #expect(KeyHygiene.findings(for: key(created: 91, used: 1, expires: 60), criteria) == [.olderThanPolicy])
        #expect(KeyHygiene.findings(for: key(created: 1, used: 1), criteria) == [.expiryBeyondPolicy])
        #expect(KeyHygiene.findings(for: key(created: 1, used: 1, expires: 91), criteria) == [.expiryBeyondPolicy])
        let noPolicy = KeyHygiene.Criteria(
            nowMS: now, idleMS: 30 * Self.day, expiringMS: 7 * Self.day, maxLifetimeMS: nil)
        #expect(KeyHygiene.findings(for: key(created: 400, used: 1), noPolicy) == [])
    }
}
