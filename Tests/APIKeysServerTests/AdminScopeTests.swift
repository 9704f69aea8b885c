import APIKeysClient
import APIKeysCore
import APIKeysServer
import APIKeysStore
import Foundation
import Testing

/// Least privilege for admin tokens, through the real server: every KeyAdmin method against
/// tokens of each scope, fenced, expired and revoked; refusals change nothing and are recorded.
@Suite struct AdminScopeTests {
    /// Every KeyAdmin method, by name, as a call that would succeed for an `admin` token. Calls
    /// that change something get fresh targets from `admin` first, so each cell of the matrix
    /// starts from the same kind of state.
    private static let methods = [
        "CreateKey", "GetKey", "ListKeys", "UpdateKey", "SetKeyEnabled", "RotateKey", "DeleteKey", "ListPermissions",
        "ListAuditEvents", "GetPolicy", "ExportAuditChain", "CreateAdminToken", "ListAdminTokens", "RevokeAdminToken",
        "WhoAmI",
    ]

    private static let reads: Set = [
        "GetKey", "ListKeys", "ListPermissions", "ListAuditEvents", "GetPolicy", "ExportAuditChain", "WhoAmI",
    ]
    private static let keyChanges: Set = ["CreateKey", "UpdateKey", "SetKeyEnabled", "RotateKey", "DeleteKey"]

    /// Calls `method` with `client`; the status it got.
    private func call(_ method: String, _ client: APIKeysClient, admin: APIKeysClient, round: Int) async -> StatusCode {
        do {
            // The victim holds a permission outside a ceiling of jobs:read,jobs:execute.
            let victim = {
                try await admin.createKey(name: "victim-\(round)", permissions: ["jobs:read", "storage:write"])
            }
            switch method {
            case "CreateKey": _ = try await client.createKey(name: "made-\(round)", permissions: ["vault:read"])
            case "GetKey": _ = try await client.getKey(id: try await victim().key.id)
            case "ListKeys": _ = try await client.listKeys()
            case "UpdateKey": _ = try await client.updateKey(id: try await victim().key.id, name: "renamed")
            case "SetKeyEnabled": _ = try await client.setKeyEnabled(id: try await victim().key.id, enabled: false)
            case "RotateKey": _ = try await client.rotateKey(id: try await victim().key.id)
            case "DeleteKey": try await client.deleteKey(id: try await victim().key.id)
            case "ListPermissions": _ = try await client.listPermissions()
            case "ListAuditEvents": _ = try await client.listAuditEvents()
            case "GetPolicy": _ = try await client.getPolicy()
            case "ExportAuditChain": _ = try await client.exportAuditChain()
            case "CreateAdminToken": _ = try await client.createAdminToken(name: "minted-\(round)", scope: .read)
            case "ListAdminTokens": _ = try await client.listAdminTokens()
            case "RevokeAdminToken":
                _ = try await admin.createAdminToken(name: "doomed-\(round)", scope: .read)
                try await client.revokeAdminToken(name: "doomed-\(round)")
            case "WhoAmI": _ = try await client.whoAmI()
            default: Issue.record("no call for \(method)")
            }
            return .ok
        } catch let error as APIKeysClientError {
            return error.code
        } catch {
            Issue.record("\(method): \(error)")
            return .internal
        }
    }

    /// What the store holds that a refused call must not change.
    private func state(_ admin: APIKeysClient) async throws -> [String] {
        let keys = try await admin.listKeys(pageSize: 1000).keys.map { "\($0.id) \($0.name) \($0.enabled) \($0.hint)" }
        let tokens = try await admin.listAdminTokens().map(\.name)
        return keys.sorted() + tokens
    }

    @Test func everyMethodAgainstEveryKindOfToken() async throws {
        let clock = ManualWallClock(nowMS: Int64(Date().timeIntervalSince1970 * 1000))
        try await withServer(clock: clock) { server, admin in
            let service = server.server.service
            func token(_ name: String, _ grant: AdminGrant) async throws -> String {
                try await service.createAdminToken(name: name, grant: grant, actor: "test")
            }
            let tokens: [(label: String, secret: String)] = [
                ("read", try await token("reader", AdminGrant(scope: .read))),
                ("keys", try await token("keeper", AdminGrant(scope: .keys))),
                (
                    "keys with ceiling",
                    try await token("fenced", AdminGrant(scope: .keys, ceiling: ["jobs:read", "jobs:execute"]))
                ),
                ("admin", try await token("boss", AdminGrant(scope: .admin))),
                ("expired", try await token("stale", AdminGrant(scope: .admin, expiresAtMS: clock.nowMS() + 60_000))),
                ("revoked", try await token("gone", AdminGrant(scope: .admin))),
            ]
            #expect(try await service.revokeAdminToken(name: "gone", actor: "test"))
            clock.advance(byMS: 60_000)

            func expected(_ label: String, _ method: String) -> StatusCode {
                switch label {
                case "expired", "revoked": return .unauthenticated
                case "read": return Self.reads.contains(method) ? .ok : .permissionDenied
                case "keys":
                    return Self.reads.contains(method) || Self.keyChanges.contains(method) ? .ok : .permissionDenied
                case "keys with ceiling": return Self.reads.contains(method) ? .ok : .permissionDenied
                default: return .ok
                }
            }

            var round = 0
            var wrong: [String] = []
            var refusals = 0
            for (label, secret) in tokens {
                let client = server.client(token: secret)
                for method in Self.methods {
                    round += 1
                    let want = expected(label, method)
                    // The fresh targets a call needs are made first (by `call`), so compare
                    // around the call alone: snapshot, call, snapshot, allowing for the targets.
                    let before = try await state(admin)
                    let got = await call(method, client, admin: admin, round: round)
                    if got != want { wrong.append("\(method) with \(label): \(got), expected \(want)") }
                    if want != .ok {
                        let after = try await state(admin)
                        let made = Set(after).subtracting(before).filter {
                            $0.contains("victim-\(round) ") || $0 == "doomed-\(round)"
                        }
                        if Set(after).subtracting(made) != Set(before) {
                            wrong.append("\(method) with \(label) changed the store")
                        }
                    }
                    if want == .permissionDenied { refusals += 1 }
                }
                await client.close()
            }
            #expect(wrong.isEmpty, "\(wrong.joined(separator: "\n"))")

            // Each refusal is in the trail, with the token's name as its actor.
            await service.flushAuditTrail()
            let denied = try await admin.listAuditEvents(action: "admin.permission_denied", pageSize: 1000).events
            #expect(denied.count == refusals)
            #expect(Set(denied.map(\.actor)) == ["reader", "keeper", "fenced"])
            #expect(denied.allSatisfy { $0.detail.contains("refused: permission denied") })
        }
    }

    @Test func aCeilingFencesWhatAKeysTokenMayGrantAndTouch() async throws {
        try await withServer { server, admin in
            let secret = try await server.server.service.createAdminToken(
                name: "deployer", grant: AdminGrant(scope: .keys, ceiling: ["jobs:execute"]), actor: "test")
            let deployer = server.client(token: secret)
            defer { Task { await deployer.close() } }

            let mine = try await deployer.createKey(name: "deploy", permissions: ["jobs:execute"])
            let wider = await #expect(throws: APIKeysClientError.self) {
                _ = try await deployer.createKey(name: "wider", permissions: ["vault:read"])
            }
            #expect(wider?.isPermissionDenied == true && wider?.message.contains("vault:read") == true)
            await #expect(throws: APIKeysClientError.self) {
                _ = try await deployer.updateKey(id: mine.key.id, permissions: ["jobs:execute", "vault:read"])
            }
            #expect(try await admin.getKey(id: mine.key.id).permissions == ["jobs:execute"])

            let storage = try await admin.createKey(name: "storage", permissions: ["storage:write"])
            let refused = await #expect(throws: APIKeysClientError.self) {
                try await deployer.deleteKey(id: storage.key.id)
            }
            #expect(refused?.code == .permissionDenied)
            #expect(try await admin.getKey(id: storage.key.id).name == "storage")
            await #expect(throws: APIKeysClientError.self) {
                _ = try await deployer.setKeyEnabled(id: storage.key.id, enabled: false)
            }
            #expect(try await admin.check(key: storage.secret, permissions: ["storage:write"]).decision == .allow)

            // Inside the ceiling it manages its keys like any keys token.
            _ = try await deployer.rotateKey(id: mine.key.id)
            try await deployer.deleteKey(id: mine.key.id)
        }
    }

    @Test func aKeysTokenWithAMaximumLifetimeMintsOnlyShortLivedKeys() async throws {
        let clock = ManualWallClock(nowMS: Int64(Date().timeIntervalSince1970 * 1000))
        try await withServer(clock: clock) { server, admin in
            let secret = try await server.server.service.createAdminToken(
                name: "ci", grant: AdminGrant(scope: .keys, maxKeyLifetimeMS: 86_400_000), actor: "test")
            let ci = server.client(token: secret)
            defer { Task { await ci.close() } }
            let day = Int64(86_400_000)
            await #expect(throws: APIKeysClientError.self, "a key that never expires") {
                _ = try await ci.createKey(name: "forever", permissions: ["jobs:execute"])
            }
            await #expect(throws: APIKeysClientError.self, "two days") {
                _ = try await ci.createKey(
                    name: "long", permissions: ["jobs:execute"], expiresAtMS: clock.nowMS() + 2 * day)
            }
            let short = try await ci.createKey(
                name: "short", permissions: ["jobs:execute"], expiresAtMS: clock.nowMS() + day / 2)
            let extended = await #expect(throws: APIKeysClientError.self) {
                _ = try await ci.updateKey(id: short.key.id, expiresAtMS: 0)
            }
            #expect(extended?.code == .permissionDenied)
            #expect(try await admin.getKey(id: short.key.id).expiresAtMS == short.key.expiresAtMS)
        }
    }

    @Test func noTokenMintsATokenWiderThanItself() async throws {
        let clock = ManualWallClock(nowMS: Int64(Date().timeIntervalSince1970 * 1000))
        try await withServer(clock: clock) { server, admin in
            let service = server.server.service
            let expiring = server.client(
                token: try await service.createAdminToken(
                    name: "temp-admin", grant: AdminGrant(scope: .admin, expiresAtMS: clock.nowMS() + 3_600_000),
                    actor: "test"))
            let keeper = server.client(
                token: try await service.createAdminToken(
                    name: "keeper", grant: AdminGrant(scope: .keys), actor: "test"))
            defer {
                Task {
                    await expiring.close(); await keeper.close()
                }
            }

            let forever = await #expect(throws: APIKeysClientError.self) {
                _ = try await expiring.createAdminToken(name: "forever", scope: .admin)
            }
            #expect(forever?.code == .permissionDenied)
            let later = await #expect(throws: APIKeysClientError.self) {
                _ = try await expiring.createAdminToken(
                    name: "later", scope: .read, expiresAtMS: clock.nowMS() + 7_200_000)
            }
            #expect(later?.code == .permissionDenied)
            let within = try await expiring.createAdminToken(
                name: "within", scope: .keys, ceiling: ["jobs:read"], expiresAtMS: clock.nowMS() + 600_000)
            #expect(
                within.secret.hasPrefix("adm_") && within.token.scope == .keys && within.token.ceiling == ["jobs:read"])

            let escalation = await #expect(throws: APIKeysClientError.self) {
                _ = try await keeper.createAdminToken(name: "escalate", scope: .admin)
            }
            #expect(escalation?.code == .permissionDenied)
            #expect(try await admin.listAdminTokens().map(\.name).contains("escalate") == false)

            // WhoAmI tells a token what it is; the minted one works with exactly its grant.
            let minted = server.client(token: within.secret)
            defer { Task { await minted.close() } }
            let me = try await minted.whoAmI()
            #expect(me.name == "within" && me.scope == .keys && me.expiresAtMS == clock.nowMS() + 600_000)
            _ = try await minted.createKey(name: "ok", permissions: ["jobs:read"])
            clock.advance(byMS: 600_000)
            let expired = await #expect(throws: APIKeysClientError.self) { _ = try await minted.listKeys() }
            #expect(expired?.code == .unauthenticated)
        }
    }

    @Test func aLeakedAdminTokenIsRevokedBeforeTheReportIsAnswered() async throws {
        try await withServer { server, admin in
            let created = try await admin.createAdminToken(name: "pasted", scope: .admin)
            let victim = server.client(token: created.secret)
            defer { Task { await victim.close() } }
            _ = try await victim.listKeys()
            let reporter = server.client(token: "")
            defer { Task { await reporter.close() } }
            try await reporter.reportLeakedKey("Bearer " + created.secret, source: "https://paste.example/x")
            let refused = await #expect(throws: APIKeysClientError.self) { _ = try await victim.listKeys() }
            #expect(refused?.code == .unauthenticated)
            #expect(try await admin.listAdminTokens().map(\.name).contains("pasted") == false)
            let revoked = try await admin.listAuditEvents(action: "admin_token.revoked").events
            #expect(revoked.first?.actor == KeyService.leakReportActor)
            #expect(revoked.first?.detail.contains("found at https://paste.example/x") == true)
            // A made-up admin token gets the same answer and leaves no trace.
            try await reporter.reportLeakedKey(KeyService.adminTokenFormat.generate())
            #expect(try await admin.listAuditEvents(action: "admin_token.revoked").events.count == revoked.count)
        }
    }
}
