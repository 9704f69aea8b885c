@testable import APIKeysClient
import APIKeysCore
import APIKeysServer
import APIKeysTestSupport
import APIKeysWire
import Foundation
import Synchronization
import Testing

/// Several real replicas (servers on their own ports and data directories) on one PostgreSQL
/// database of the cluster the test run started.
@Suite(
    .enabled(if: TestDatabase.url != nil, "needs the PostgreSQL cluster of Tests/postgres/with-cluster.sh"),
    .timeLimit(.minutes(2)))
struct ReplicaTests {
    /// How long a change made on one replica may take to show on another in these tests: a NOTIFY
    /// arrives in milliseconds; a lost one is caught by the 250 ms poll.
    static let propagationBound: Duration = .seconds(2)

    private func withReplicas(
        _ count: Int, _ body: ([TestServer], String) async throws -> Void
    ) async throws {
        let url = try await TestDatabase.createDatabase()
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
            let matches =
                reason == nil ? answer.decision == .allow : (answer.decision == .deny && answer.reason == reason)
            if matches { return ContinuousClock.now - start }
            if ContinuousClock.now - start > Self.propagationBound {
                Issue.record("still \(answer.decision)/\(answer.reason) after \(Self.propagationBound)")
                return ContinuousClock.now - start
            }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    /// Admin tokens are the database's: one made over RPC on one replica works on the other with
    /// its scope, and a revocation on either refuses it on both the moment it returns.
    @Test func scopedAdminTokensHoldAcrossReplicas() async throws {
        try await withReplicas(2) { replicas, _ in
            let boss = replicas[0].client(token: replicas[0].adminToken)
            let other = replicas[1].client(token: replicas[0].adminToken)
            defer {
                Task {
                    await boss.close(); await other.close()
                }
            }
            let reader = try await boss.createAdminToken(name: "reader", scope: .read)
            let viaB = replicas[1].client(token: reader.secret)
            let viaA = replicas[0].client(token: reader.secret)
            defer {
                Task {
                    await viaB.close(); await viaA.close()
                }
            }
            _ = try await viaB.listKeys()
            #expect(try await viaB.whoAmI().scope == .read)
            let denied = await #expect(throws: APIKeysClientError.self) {
                _ = try await viaB.createKey(name: "no", permissions: ["jobs:read"])
            }
            #expect(denied?.code == .permissionDenied)
            #expect(try await other.listAdminTokens().map(\.name).contains("reader"))

            try await other.revokeAdminToken(name: "reader")
            for client in [viaA, viaB] {
                let refused = await #expect(throws: APIKeysClientError.self) { _ = try await client.listKeys() }
                #expect(refused?.code == .unauthenticated)
            }
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

            _ = try await c.updateKey(id: created.key.id, permissions: ["history:read"])
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
            _ = try await viaC.createKey(name: "by-second", permissions: ["jobs:read"])
            #expect(try await replicas[1].server.service.revokeAdminToken(name: "second", actor: "test"))
            await #expect(throws: APIKeysClientError.self) { _ = try await viaC.listKeys() }
            // C knows the token from its last change, but the commit checks it: refused at once too.
            let late = await #expect(throws: APIKeysClientError.self) {
                _ = try await viaC.createKey(name: "after-revoke", permissions: ["jobs:read"])
            }
            #expect(late?.code == .unauthenticated)

            // One audit trail: checks made on every replica, in seq order, seqs unique.
            let probe = try await a.createKey(name: "probe", permissions: ["jobs:read"])
            // Every replica must know the key first: a replica still catching up would answer
            // (and record) the check as one of an unknown key, which the key's page does not hold.
            _ = try await waitFor(b, probe.secret, nil)
            _ = try await waitFor(c, probe.secret, nil)
            for (index, client) in clients.enumerated() {
                let answer = try await client.check(
                    key: probe.secret, permissions: ["jobs:read"], resource: "GET /from/\(index)")
                #expect(answer.decision == .allow, "replica \(index)")
            }
            for replica in replicas { await replica.server.service.flushAuditTrail() }
            let trail = try await c.listAuditEvents(keyID: probe.key.id, pageSize: 100).events
            let resources = Set(trail.filter { $0.action == "api.request" }.map(\.resource))
            #expect(resources.isSuperset(of: ["GET /from/0", "GET /from/1", "GET /from/2"]))
            #expect(trail.map(\.seq) == trail.map(\.seq).sorted(by: >))
            let everything = try await b.listAuditEvents(pageSize: 1000).events
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

    /// A replica started on a database that already holds keys loads every one of them (the
    /// table is read in two halves, on two connections sharing one snapshot) before it listens.
    @Test func aReplicaStartedLaterLoadsEveryKey() async throws {
        try await withReplicas(1) { replicas, url in
            let token = replicas[0].adminToken
            let a = replicas[0].client(token: token)
            var live: [String] = []
            var gone: [String] = []
            for n in 0..<11 {
                let created = try await a.createKey(name: "k\(n)", permissions: ["jobs:read"])
                if n % 4 == 3 {
                    try await a.deleteKey(id: created.key.id)
                    gone.append(created.secret)
                } else {
                    live.append(created.secret)
                }
            }
            await a.close()
            let dir = try makeTemporaryDirectory("apikeyd-replica")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let late = try await TestServer.start(
                dataDirectory: dir, clock: ManualWallClock(nowMS: Int64(Date().timeIntervalSince1970 * 1000)),
                configure: { $0.databaseURL = url })
            let client = late.client(token: token)
            for secret in live {
                #expect(try await client.check(key: secret, permissions: ["jobs:read"]).decision == .allow)
            }
            for secret in gone {
                #expect(try await client.check(key: secret, permissions: ["jobs:read"]).reason == .unknownKey)
            }
            await client.close()
            await late.server.shutdown()
        }
    }

    /// Concurrent mutations of one replica commit together (one transaction per batch): rotations
    /// of one key race each other, renames race a delete, creations run beside them. Afterwards the
    /// database, the replica that made the changes and another replica agree: exactly the secret of
    /// the rotation that committed last works, the deleted key is gone everywhere.
    @Test func concurrentMutationsOfOneReplicaCommitTogetherInOrder() async throws {
        try await withReplicas(2) { replicas, _ in
            let token = replicas[0].adminToken
            let clients = replicas.map { $0.client(token: token) }
            defer { Task { for client in clients { await client.close() } } }
            let (a, b) = (clients[0], clients[1])
            let rotated = try await a.createKey(name: "rotated", permissions: ["jobs:read"])
            let doomed = try await a.createKey(name: "doomed", permissions: ["jobs:read"])

            enum Outcome: Sendable { case rotation(RotateKeyResponse), created(CreateKeyResponse), other }
            let outcomes = try await withThrowingTaskGroup(of: Outcome.self) { group in
                for round in 0..<16 {
                    group.addTask { .rotation(try await a.rotateKey(id: rotated.key.id)) }
                    group.addTask { .created(try await a.createKey(name: "new\(round)", permissions: ["jobs:read"])) }
                    group.addTask {
                        do {
                            _ = try await a.updateKey(id: doomed.key.id, name: "renamed\(round)")
                        } catch let error as APIKeysClientError where error.code == .notFound {}
                        return .other
                    }
                    if round == 8 {
                        group.addTask {
                            try await a.deleteKey(id: doomed.key.id); return .other
                        }
                    }
                }
                var outcomes: [Outcome] = []
                for try await outcome in group { outcomes.append(outcome) }
                return outcomes
            }
            let rotations = outcomes.compactMap { if case .rotation(let r) = $0 { r } else { nil } }
            let creations = outcomes.compactMap { if case .created(let c) = $0 { c } else { nil } }
            #expect(rotations.count == 16 && creations.count == 16)

            var allowed: [RotateKeyResponse] = []
            for rotation in rotations
            where try await a.check(key: rotation.secret, permissions: ["jobs:read"]).decision == .allow {
                allowed.append(rotation)
            }
            #expect(allowed.count == 1, "one rotation committed last")
            let last = try #require(allowed.first)
            #expect(try await a.getKey(id: rotated.key.id).hint == last.key.hint, "the database holds the same secret")
            for client in [a, b] {
                _ = try await waitFor(client, last.secret, nil)
                for rotation in rotations where rotation.secret != last.secret {
                    #expect(
                        try await client.check(key: rotation.secret, permissions: ["jobs:read"]).reason == .unknownKey)
                }
                #expect(try await client.check(key: rotated.secret, permissions: ["jobs:read"]).reason == .unknownKey)
                _ = try await waitFor(client, doomed.secret, .unknownKey)
                for creation in creations { _ = try await waitFor(client, creation.secret, nil) }
            }
            await #expect(throws: APIKeysClientError.self) { try await b.getKey(id: doomed.key.id) }
        }
    }

    /// A client of three replicas keeps checking while one is shut down and started again on its
    /// port: checks in flight on it are sent again to another replica, so none fails.
    @Test func aClientOfThreeReplicasRidesOutOneGoingAway() async throws {
        try await withReplicas(3) { replicas, url in
            let token = replicas[0].adminToken
            var configuration = APIKeysClient.Configuration(adminToken: token, timeout: .seconds(5))
            configuration.endpoints = replicas.map { APIKeysClient.Endpoint(host: "127.0.0.1", port: $0.port) }
            let client = APIKeysClient(configuration: configuration)
            let issued = try await client.createKey(name: "k", permissions: ["jobs:read"])
            for replica in replicas { _ = try await waitFor(replica.client(token: token), issued.secret, nil) }
            let tally = Tally()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        while !tally.stop.load(ordering: .relaxed) {
                            do {
                                let answer = try await client.check(key: issued.secret, permissions: ["jobs:read"])
                                if answer.decision == .allow {
                                    tally.answered.add(1, ordering: .relaxed)
                                } else {
                                    tally.failed.add(1, ordering: .relaxed)
                                }
                            } catch {
                                tally.failed.add(1, ordering: .relaxed)
                            }
                        }
                    }
                }
                try await Task.sleep(for: .milliseconds(300))
                let port = replicas[1].port
                await replicas[1].server.shutdown()
                try await Task.sleep(for: .milliseconds(300))
                let restarted = try await TestServer.start(
                    dataDirectory: replicas[1].dataDirectory, port: port, clock: replicas[1].clock,
                    configure: { $0.databaseURL = url })
                try await Task.sleep(for: .milliseconds(300))
                tally.stop.store(true, ordering: .relaxed)
                try await group.waitForAll()
                await restarted.server.shutdown()
            }
            await client.close()
            #expect(tally.failed.load(ordering: .relaxed) == 0)
            #expect(tally.answered.load(ordering: .relaxed) > 100)
            // Checks did meet the replica going away, and were sent again to another.
            #expect(client.retriedCalls.load(ordering: .relaxed) > 0, "no check was retried: the test proved nothing")
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
            let killed = try await TestDatabase.psql(
                url,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'apikeyd-listener' AND datname = '\(database)'"
            )
            #expect(killed.trimmingCharacters(in: .whitespacesAndNewlines) == "2")
            _ = try await clients[0].setKeyEnabled(id: issued.key.id, enabled: false)
            _ = try await waitFor(clients[1], issued.secret, .disabled)
            // The change above may have come by the poll; the listeners must also come back.
            var listening = ""
            for _ in 0..<100 where listening != "2" {
                try await Task.sleep(for: .milliseconds(100))
                listening = try await TestDatabase.psql(
                    url,
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'apikeyd-listener' AND datname = '\(database)'"
                ).trimmingCharacters(in: .whitespacesAndNewlines)
            }
            #expect(listening == "2", "the listeners did not reconnect")
        }
    }
}

@Suite struct EndpointListTests {
    @Test func endpointsAreHostPortPairsSeparatedByCommas() {
        #expect(
            APIKeysClient.Endpoint.list("a:7411, b:7412,[::1]:7413")
                == [.init(host: "a", port: 7411), .init(host: "b", port: 7412), .init(host: "::1", port: 7413)])
        #expect(APIKeysClient.Endpoint.list(":7411") == [.init(host: "127.0.0.1", port: 7411)])
        #expect(APIKeysClient.Endpoint.list("a:7411,b") == nil)
        #expect(APIKeysClient.Endpoint.list("a:0") == nil)
        #expect(APIKeysClient.Endpoint.list("") == nil)
        #expect(APIKeysClient.Endpoint(host: "::1", port: 1).description == "[::1]:1")
    }
}

/// The database going away under running replicas.
@Suite(
    .enabled(if: TestDatabase.url != nil, "needs PostgreSQL (Tests/postgres/with-cluster.sh)"), .timeLimit(.minutes(2)))
struct DatabaseFaultTests {
    /// PostgreSQL stopped under a replica: checks are answered from its last state, then fail
    /// closed (UNAVAILABLE, /readyz's reason) past --max-staleness; mutations fail UNAVAILABLE;
    /// PostgreSQL back: the replica catches up and serves again.
    @Test func withoutItsDatabaseAReplicaServesThenFailsClosedThenCatchesUp() async throws {
        try await PrivateCluster.with { cluster in
            let dir = try makeTemporaryDirectory("apikeyd-fault")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let replica = try await TestServer.start(
                dataDirectory: dir, clock: ManualWallClock(nowMS: 0),
                configure: {
                    $0.databaseURL = cluster.url
                    $0.maxStalenessMS = 1500
                    $0.clock = SystemWallClock()
                })
            let client = replica.client(timeout: .seconds(15))
            let issued = try await client.createKey(name: "k", permissions: ["jobs:read"])
            #expect(try await client.check(key: issued.secret, permissions: ["jobs:read"]).decision == .allow)
            #expect(replica.server.readinessProblem == nil)

            try await cluster.stop()
            #expect(try await client.check(key: issued.secret, permissions: ["jobs:read"]).decision == .allow)
            // Past its staleness bound (1.5 s) it fails closed: waited for, not slept for.
            var refusal: APIKeysClientError?
            let stopped = ContinuousClock.now
            while refusal == nil && ContinuousClock.now - stopped < .seconds(15) {
                do {
                    _ = try await client.check(key: issued.secret, permissions: ["jobs:read"])
                    try await Task.sleep(for: .milliseconds(100))
                } catch let error as APIKeysClientError {
                    refusal = error
                }
            }
            let refused = try #require(refusal, "the replica never failed closed without its database")
            #expect(refused.code == .unavailable)
            #expect(refused.message.contains("has not reached its database"))
            #expect(replica.server.readinessProblem?.contains("has not reached its database") == true)
            let mutation = await #expect(throws: APIKeysClientError.self) {
                _ = try await client.createKey(name: "while down", permissions: ["jobs:read"])
            }
            #expect(mutation?.code == .unavailable)
            #expect(mutation?.message.contains("127.0.0.1") == false, "no database address reaches a client")

            try await cluster.start()
            let start = ContinuousClock.now
            var answer: CheckResponse?
            while ContinuousClock.now - start < .seconds(15) {
                answer = try? await client.check(key: issued.secret, permissions: ["jobs:read"])
                if answer?.decision == .allow { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(answer?.decision == .allow, "the replica caught up once PostgreSQL was back")
            // Ready again once the audit writer has written what waited (its retry runs on its own clock).
            while replica.server.readinessProblem != nil && ContinuousClock.now - start < .seconds(30) {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(replica.server.readinessProblem == nil)
            await client.close()
            await replica.server.shutdown()
        }
    }

    /// kill -9 of a replica while it serves checks (its audit writer busy) and creates keys: every
    /// CreateKey it acknowledged is on the other replica, which keeps serving.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: ExecutableTests.apikeyd.path)))
    func aReplicaKilledMidWorkLosesNoAcknowledgedChange() async throws {
        let url = try await TestDatabase.createDatabase()
        let (dirA, dirB) = (try makeTemporaryDirectory("apikeyd-kill-a"), try makeTemporaryDirectory("apikeyd-kill-b"))
        defer {
            try? FileManager.default.removeItem(atPath: dirA)
            try? FileManager.default.removeItem(atPath: dirB)
        }
        let a = try await offThePool {
            try ExecutableTests.RunningServer(["--data-dir", dirA, "--port", "0", "--database-url", url])
        }
        let b = try await offThePool {
            try ExecutableTests.RunningServer(["--data-dir", dirB, "--port", "0", "--database-url", url])
        }
        defer { _ = b.stop() }
        let token = try String(contentsOfFile: dirA + "/admin.token", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let clientA = APIKeysClient(configuration: .init(port: a.port, adminToken: token, timeout: .seconds(5)))
        let clientB = APIKeysClient(configuration: .init(port: b.port, adminToken: token, timeout: .seconds(5)))
        let first = try await clientA.createKey(name: "first", permissions: ["jobs:read"])
        let acknowledged = Acknowledged(first: (first.key.id, first.secret))
        await withTaskGroup(of: Void.self) { group in
            group.addTask {  // checks keep A's audit writer busy
                while (try? await clientA.check(key: first.secret, permissions: ["jobs:read"], resource: "GET /x"))
                    != nil
                {}
            }
            group.addTask {
                for index in 0..<1000 {
                    guard let issued = try? await clientA.createKey(name: "k\(index)", permissions: ["jobs:read"])
                    else { return }
                    acknowledged.keys.withLock { $0.append((issued.key.id, issued.secret)) }
                }
            }
            // Killed once it has acknowledged a few creates (their audit events among the checks').
            let start = ContinuousClock.now
            while acknowledged.keys.withLock({ $0.count }) < 20 && ContinuousClock.now - start < .seconds(20) {
                try? await Task.sleep(for: .milliseconds(20))
            }
            kill(a.process.processIdentifier, SIGKILL)
            await group.waitForAll()
        }
        try await offThePool { a.process.waitUntilExit() }
        await clientA.close()
        let keys = acknowledged.keys.withLock { $0 }
        #expect(keys.count > 5)
        for (id, secret) in keys {
            #expect(try await clientB.getKey(id: id).id == id)
            #expect(try await clientB.check(key: secret, permissions: ["jobs:read"]).decision == .allow)
        }
        let created = try await clientB.listAuditEvents(action: "key.created", pageSize: 1000)
            .events
        #expect(Set(created.map(\.keyID)).isSuperset(of: keys.map(\.0)))
        await clientB.close()
    }
}

/// Counts of a test's concurrent checkers, shared by reference.
private final class Tally: Sendable {
    let stop = Atomic<Bool>(false)
    let answered = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
}

/// Keys whose CreateKey was acknowledged (id, secret), shared by reference.
private final class Acknowledged: Sendable {
    let keys: Mutex<[(String, String)]>
    init(first: (String, String)) { keys = Mutex([first]) }
}
