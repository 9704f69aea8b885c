import APIKeysClient
import APIKeysCore
import APIKeysServer
import APIKeysTestSupport
import APIKeysWire
import Foundation
import Testing

/// Several real replicas (servers on their own ports and data directories) on one PostgreSQL
/// database of the cluster the test run started.
@Suite(.enabled(if: TestDatabase.url != nil, "needs the PostgreSQL cluster of Tests/postgres/with-cluster.sh"))
struct ReplicaTests {
    /// How long a change made on one replica may take to show on another in these tests: a NOTIFY
    /// arrives in milliseconds; a lost one is caught by the 250 ms poll.
    static let propagationBound: Duration = .seconds(2)

    private func withReplicas(
        _ count: Int, _ body: ([TestServer], String) async throws -> Void
    ) async throws {
        let url = try TestDatabase.createDatabase()
        var replicas: [TestServer] = []
        var directories: [String] = []
        do {
            for _ in 0..<count {
                let dir = try makeTemporaryDirectory("apikeyd-replica")
                directories.append(dir)
                replicas.append(
                    try await TestServer.start(
                        dataDirectory: dir, clock: ManualWallClock(nowMS: Int64(Date().timeIntervalSince1970 * 1000)),
                        configure: { $0.databaseURL = url }))
            }
            try await body(replicas, url)
        } catch {
            for replica in replicas { await replica.server.shutdown() }
            for dir in directories { try? FileManager.default.removeItem(atPath: dir) }
            throw error
        }
        for replica in replicas { await replica.server.shutdown() }
        for dir in directories { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// Waits until `secret` gets `reason` on `client` (nil: allowed); returns how long it took.
    private func waitFor(
        _ client: APIKeysClient, _ secret: String, _ reason: DenyReason?, permissions: [String] = ["jobs:read"]
    ) async throws -> Duration {
        let start = ContinuousClock.now
        while true {
            let answer = try await client.check(key: secret, permissions: permissions)
            let matches = reason == nil ? answer.decision == .allow : (answer.decision == .deny && answer.reason == reason)
            if matches { return ContinuousClock.now - start }
            if ContinuousClock.now - start > Self.propagationBound {
                Issue.record("still \(answer.decision)/\(answer.reason) after \(Self.propagationBound)")
                return ContinuousClock.now - start
            }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    @Test func aChangeOnOneReplicaHoldsOnEveryOther() async throws {
        try await withReplicas(3) { replicas, _ in
            let token = replicas[0].adminToken
            #expect(token.hasPrefix("adm_"), "the first replica bootstraps the admin token")
            let clients = replicas.map { $0.client(token: token) }
            defer { Task { for client in clients { await client.close() } } }
            let (a, b, c) = (clients[0], clients[1], clients[2])

            let created = try await a.createKey(name: "shared", permissions: ["jobs:read"])
            #expect(try await a.check(key: created.secret, permissions: ["jobs:read"]).decision == .allow)
            _ = try await waitFor(b, created.secret, nil)
            _ = try await waitFor(c, created.secret, nil)

            let rotated = try await b.rotateKey(id: created.key.id)
            #expect(try await b.check(key: created.secret, permissions: ["jobs:read"]).reason == .unknownKey)
            _ = try await waitFor(a, created.secret, .unknownKey)
            _ = try await waitFor(c, created.secret, .unknownKey)
            _ = try await waitFor(a, rotated.secret, nil)

            _ = try await c.updateKey(
                UpdateKeyRequest(id: created.key.id, permissions: PermissionSet(names: ["history:read"])))
            _ = try await waitFor(a, rotated.secret, .missingPermission)
            _ = try await waitFor(b, rotated.secret, nil, permissions: ["history:read"])

            _ = try await a.setKeyEnabled(id: created.key.id, enabled: false)
            _ = try await waitFor(b, rotated.secret, .disabled, permissions: ["history:read"])
            _ = try await waitFor(c, rotated.secret, .disabled, permissions: ["history:read"])

            try await c.deleteKey(id: created.key.id)
            _ = try await waitFor(a, rotated.secret, .unknownKey, permissions: ["history:read"])
            _ = try await waitFor(b, rotated.secret, .unknownKey, permissions: ["history:read"])

            // Admin tokens live in the database: made through one replica, honoured by all.
            let second = try await replicas[0].server.service.createAdminToken(name: "second", actor: "test")
            let viaC = replicas[2].client(token: second)
            defer { Task { await viaC.close() } }
            _ = try await viaC.listKeys()
            #expect(try await replicas[1].server.service.revokeAdminToken(name: "second", actor: "test"))
            await #expect(throws: APIKeysClientError.self) { _ = try await viaC.listKeys() }

            // One audit trail: checks made on every replica, in seq order, seqs unique.
            let probe = try await a.createKey(name: "probe", permissions: ["jobs:read"])
            _ = try await waitFor(c, probe.secret, nil)
            for (index, client) in clients.enumerated() {
                _ = try await client.check(key: probe.secret, permissions: ["jobs:read"], resource: "GET /from/\(index)")
            }
            for replica in replicas { await replica.server.service.flushAuditTrail() }
            let trail = try await c.listAuditEvents(ListAuditEventsRequest(keyID: probe.key.id, pageSize: 100)).events
            let resources = Set(trail.filter { $0.action == "api.request" }.map(\.resource))
            #expect(resources.isSuperset(of: ["GET /from/0", "GET /from/1", "GET /from/2"]))
            #expect(trail.map(\.seq) == trail.map(\.seq).sorted(by: >))
            let everything = try await b.listAuditEvents(ListAuditEventsRequest(pageSize: 1000)).events
            #expect(Set(everything.map(\.seq)).count == everything.count)
            #expect(everything.contains { $0.action == "admin_token.revoked" })
        }
    }

    /// Checkers on A and C while B revokes keys: each revocation is seen on A and C within the
    /// bound after B's call returned.
    @Test func revocationsOnOneReplicaReachTheOthersWithinTheBound() async throws {
        try await withReplicas(3) { replicas, _ in
            let token = replicas[0].adminToken
            let clients = replicas.map { $0.client(token: token) }
            defer { Task { for client in clients { await client.close() } } }
            var worst: Duration = .zero
            for round in 0..<12 {
                let issued = try await clients[1].createKey(name: "r\(round)", permissions: ["jobs:read"])
                _ = try await waitFor(clients[0], issued.secret, nil)
                _ = try await waitFor(clients[2], issued.secret, nil)
                let expected: DenyReason
                switch round % 3 {
                case 0:
                    _ = try await clients[1].rotateKey(id: issued.key.id)
                    expected = .unknownKey
                case 1:
                    _ = try await clients[1].setKeyEnabled(id: issued.key.id, enabled: false)
                    expected = .disabled
                default:
                    try await clients[1].deleteKey(id: issued.key.id)
                    expected = .unknownKey
                }
                worst = max(worst, try await waitFor(clients[0], issued.secret, expected))
                worst = max(worst, try await waitFor(clients[2], issued.secret, expected))
            }
            #expect(worst < Self.propagationBound)
        }
    }

    /// The listener's connection is killed (`pg_terminate_backend`): a change made meanwhile is
    /// still applied, by the poll or by the catch-up after the listener reconnects.
    @Test func aLostListenerIsCaughtUp() async throws {
        try await withReplicas(2) { replicas, url in
            let token = replicas[0].adminToken
            let clients = replicas.map { $0.client(token: token) }
            defer { Task { for client in clients { await client.close() } } }
            let issued = try await clients[0].createKey(name: "k", permissions: ["jobs:read"])
            _ = try await waitFor(clients[1], issued.secret, nil)
            let database = String(url.split(separator: "/").last ?? "")
            let killed = try TestDatabase.psql(
                url,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'apikeyd-listener' AND datname = '\(database)'"
            )
            #expect(killed.trimmingCharacters(in: .whitespacesAndNewlines) == "2")
            _ = try await clients[0].setKeyEnabled(id: issued.key.id, enabled: false)
            _ = try await waitFor(clients[1], issued.secret, .disabled)
        }
    }
}
