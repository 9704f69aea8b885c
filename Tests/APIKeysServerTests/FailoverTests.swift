import APIKeysClient
import APIKeysCore
import APIKeysServer
import APIKeysTestSupport
import APIKeysWire
import Foundation
import Synchronization
import Testing

/// Replicas on a highly available PostgreSQL: a primary, a streaming standby made from it, and a
/// TCP proxy in front (the address the replicas are given, as a virtual IP would be). A failover
/// crashes the primary, promotes the standby and points the proxy at it.
@Suite(
    .enabled(if: TestDatabase.url != nil, "needs PostgreSQL (Tests/postgres/with-cluster.sh)"),
    .serialized, .timeLimit(.minutes(3)))
struct FailoverTests {
    /// The clusters, the proxy and the replicas of one test.
    final class Fleet: Sendable {
        let primary: PrivateCluster
        let standby: PrivateCluster
        let proxy: TCPProxy
        private let started = Mutex<[(TestServer, String)]>([])

        init(primary: PrivateCluster, standby: PrivateCluster, proxy: TCPProxy) {
            self.primary = primary
            self.standby = standby
            self.proxy = proxy
        }

        /// A replica whose database is the proxy's address (the first one makes the admin token).
        func startReplica(requireStandby: Bool = false) async throws -> TestServer {
            let dir = try makeTemporaryDirectory("apikeyd-failover")
            let url = "postgres://apikeyd@127.0.0.1:\(proxy.port)/apikeyd_test"
            let replica = try await TestServer.start(
                dataDirectory: dir, clock: ManualWallClock(nowMS: Int64(Date().timeIntervalSince1970 * 1000)),
                configure: {
                    $0.databaseURL = url
                    $0.requireSynchronousStandby = requireStandby
                })
            started.withLock { $0.append((replica, dir)) }
            return replica
        }

        /// Waits until the standby has replayed everything the primary has written.
        func waitUntilStandbyHasEverything() async throws {
            let lsn = try await TestDatabase.psql(primary.url, "SELECT pg_current_wal_lsn()")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let start = ContinuousClock.now
            while try await TestDatabase.psql(standby.url, "SELECT pg_last_wal_replay_lsn() >= '\(lsn)'::pg_lsn")
                .trimmingCharacters(in: .whitespacesAndNewlines) != "t"
            {
                if ContinuousClock.now - start > .seconds(10) { throw FailoverTestError("the standby never caught up") }
                try await Task.sleep(for: .milliseconds(50))
            }
        }

        /// The primary crashes; the standby (started again if it was stopped) is promoted and the
        /// proxy sends every new connection to it.
        func failOver(startingTheStandby: Bool = false) async throws {
            try await primary.crash()
            await proxy.switchTarget(port: nil)
            if startingTheStandby { try await standby.start() }
            try await standby.promote()
            await proxy.switchTarget(port: standby.port)
        }

        func shutdown() async {
            for (replica, dir) in started.withLock({ $0 }) {
                await replica.server.shutdown()
                try? FileManager.default.removeItem(atPath: dir)
            }
            await proxy.close()
            await standby.remove()
            await primary.remove()
        }
    }

    /// A watcher's switch and what it saw.
    final class Watch: Sendable {
        let watching = Atomic<Bool>(true)
        let allowed = Atomic<Int>(0)
    }

    struct FailoverTestError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    private func withFleet(_ body: (Fleet) async throws -> Void) async throws {
        let primary = try await PrivateCluster.start()
        let standby: PrivateCluster
        do { standby = try await PrivateCluster.standby(of: primary) } catch {
            await primary.remove()
            throw error
        }
        let fleet = Fleet(primary: primary, standby: standby, proxy: try await TCPProxy.start(targetPort: primary.port))
        do {
            try await body(fleet)
        } catch {
            await fleet.shutdown()
            throw error
        }
        await fleet.shutdown()
    }

    /// The answer to a check of `secret` (an error, such as a replica failing closed, as nil).
    private func answer(_ client: APIKeysClient, _ secret: String) async -> CheckResponse? {
        try? await client.check(key: secret, permissions: ["jobs:read"], timeout: .seconds(2))
    }

    private func describe(_ answer: CheckResponse?) -> String {
        guard let answer else { return "error" }
        return answer.decision == .allow ? "allow" : "deny/\(answer.reason)"
    }

    /// Waits until every client of `replicas` answers each secret as `reference` does; returns
    /// what they answered; records an issue after `bound`.
    private func waitForAgreement(
        _ replicas: [APIKeysClient], with reference: APIKeysClient, on secrets: [String], within bound: Duration
    ) async -> [String] {
        let start = ContinuousClock.now
        while true {
            var expected: [String] = []
            var agreed = true
            for secret in secrets {
                let truth = describe(await answer(reference, secret))
                expected.append(truth)
                for client in replicas where describe(await answer(client, secret)) != truth { agreed = false }
            }
            if agreed, !expected.contains("error") { return expected }
            if ContinuousClock.now - start > bound {
                Issue.record("the replicas still disagree with a fresh one after \(bound)")
                return expected
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Waits until `secret` gets `reason` from every client; records an issue after `bound`.
    private func waitForDenial(
        _ clients: [APIKeysClient], _ secret: String, _ reason: DenyReason, within bound: Duration
    ) async {
        let start = ContinuousClock.now
        for client in clients {
            while await answer(client, secret).map({ $0.decision == .deny && $0.reason == reason }) != true {
                if ContinuousClock.now - start > bound {
                    Issue.record("not denied (\(reason)) everywhere within \(bound)")
                    return
                }
                try? await Task.sleep(for: .milliseconds(2))
            }
        }
    }

    /// Replication is asynchronous and the standby was stopped: 40 disables and 2 rotations that
    /// replica A acknowledged (and B applied) are not on the promoted standby. Both replicas find
    /// that out, load every key again and agree with a replica started after the failover; the 42
    /// keys' lost changes are reported (metric, `key.change_lost` events naming each key); and a
    /// revocation made after the failover holds everywhere within a second. 44 changes are lost,
    /// more than the 32 versions PostgreSQL's sequence logs ahead, so new changes are numbered
    /// over the lost ones unless the timeline is in the version.
    @Test func aLossyFailoverIsFoundReportedAndHealed() async throws {
        try await withFleet { fleet in
            let a = try await fleet.startReplica()
            let b = try await fleet.startReplica()
            let (adminA, adminB) = (a.client(token: a.adminToken), b.client(token: a.adminToken))
            var keys: [CreateKeyResponse] = []
            for number in 0..<45 {
                keys.append(try await adminA.createKey(name: "key \(number)", permissions: ["jobs:read"]))
            }
            try await fleet.waitUntilStandbyHasEverything()
            try await fleet.standby.stop()

            for key in keys[0..<40] { _ = try await adminA.setKeyEnabled(id: key.key.id, enabled: false) }
            var rotated: [String] = []
            for key in keys[40..<42] { rotated.append(try await adminA.rotateKey(id: key.key.id).secret) }
            await waitForDenial([adminB], keys[39].secret, .disabled, within: .seconds(2))
            await waitForDenial([adminB], keys[41].secret, .unknownKey, within: .seconds(2))
            let newestBefore = try await TestDatabase.psql(fleet.primary.url, "SELECT max(version) FROM key_changes")

            try await fleet.failOver(startingTheStandby: true)
            let c = try await fleet.startReplica()
            let adminC = c.client(token: a.adminToken)
            let secrets = keys.map(\.secret) + rotated
            let answers = await waitForAgreement(
                [adminA, adminB], with: adminC, on: secrets, within: .seconds(15))
            // The database is the truth: what it lost is undone everywhere, and said so.
            #expect(answers[0] == "allow" && answers[41] == "allow")
            #expect(answers[45] == "deny/\(DenyReason.unknownKey)")
            for replica in [a, b] {
                let rewrites = replica.server.service.replicaHistoryRewrites
                #expect(rewrites?.rewrites == 1)
                #expect(rewrites?.changesLost == 44, "40 disables, 2 rotations of 2 changes each")
                // Ready again once reloaded (the audit writer may still be reconnecting for a moment).
                let start = ContinuousClock.now
                while let problem = replica.server.readinessProblem {
                    if ContinuousClock.now - start > .seconds(15) {
                        Issue.record("still not ready 15 s after agreeing: \(problem)")
                        break
                    }
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            #expect(c.server.service.replicaHistoryRewrites?.rewrites == 0)
            let reported = try await adminC.listAuditEvents(action: "key.change_lost", pageSize: 500).events
            let byReplica = Dictionary(grouping: reported, by: \.actor)
            #expect(byReplica.count == 2, "each replica reports what it had applied: \(byReplica.keys.sorted())")
            for (_, events) in byReplica {
                #expect(Set(events.map(\.keyID)) == Set(keys[0..<42].map(\.key.id)))
            }

            _ = try await adminA.setKeyEnabled(id: keys[44].key.id, enabled: false)
            // Numbered above every change the failover lost, not over them.
            let newestAfter = try await TestDatabase.psql(fleet.standby.url, "SELECT max(version) FROM key_changes")
            #expect(
                Int64(newestAfter.trimmingCharacters(in: .whitespacesAndNewlines))!
                    > Int64(newestBefore.trimmingCharacters(in: .whitespacesAndNewlines))!)
            #expect(await answer(adminA, keys[44].secret)?.reason == .disabled)
            await waitForDenial([adminB, adminC], keys[44].secret, .disabled, within: .seconds(1))
            _ = try await adminC.setKeyEnabled(id: keys[43].key.id, enabled: false)
            await waitForDenial([adminA, adminB], keys[43].secret, .disabled, within: .seconds(1))
            for client in [adminA, adminB, adminC] { await client.close() }
        }
    }

    /// The standby has every change when the primary dies: no revoked key is allowed during the
    /// gap, changes work again within 15 s, a revocation after it holds everywhere within a
    /// second, and nothing is reported lost (the replicas see the new timeline and keep their index).
    @Test func aCleanFailoverLosesNothing() async throws {
        try await withFleet { fleet in
            let a = try await fleet.startReplica()
            let b = try await fleet.startReplica()
            let (adminA, adminB) = (a.client(token: a.adminToken), b.client(token: a.adminToken))
            var keys: [CreateKeyResponse] = []
            for number in 0..<4 {
                keys.append(try await adminA.createKey(name: "key \(number)", permissions: ["jobs:read"]))
            }
            _ = try await adminA.setKeyEnabled(id: keys[0].key.id, enabled: false)
            await waitForDenial([adminB], keys[0].secret, .disabled, within: .seconds(2))
            try await fleet.waitUntilStandbyHasEverything()

            let watch = Watch()
            let revoked = keys[0].secret
            let watcher = Task {
                while watch.watching.load(ordering: .relaxed) {
                    for client in [adminA, adminB] where await answer(client, revoked)?.decision == .allow {
                        watch.allowed.add(1, ordering: .relaxed)
                    }
                    try? await Task.sleep(for: .milliseconds(5))
                }
            }
            try await fleet.failOver()
            let switched = ContinuousClock.now
            while (try? await adminA.createKey(name: "after", permissions: ["jobs:read"], timeout: .seconds(2))) == nil
            {
                if ContinuousClock.now - switched > .seconds(15) { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(ContinuousClock.now - switched <= .seconds(15), "CreateKey works again within 15 s")
            _ = try await adminB.setKeyEnabled(id: keys[1].key.id, enabled: false)
            await waitForDenial([adminB, adminA], keys[1].secret, .disabled, within: .seconds(1))
            watch.watching.store(false, ordering: .relaxed)
            await watcher.value
            #expect(watch.allowed.load(ordering: .relaxed) == 0, "a revoked key was allowed during the failover")
            for replica in [a, b] { #expect(replica.server.service.replicaHistoryRewrites?.rewrites == 0) }
            let c = try await fleet.startReplica()
            let adminC = c.client(token: a.adminToken)
            _ = await waitForAgreement([adminA, adminB], with: adminC, on: keys.map(\.secret), within: .seconds(2))
            for client in [adminA, adminB, adminC] { await client.close() }
        }
    }

    /// With a synchronous standby required and configured, the lossy sequence loses nothing
    /// acknowledged: a revocation made while the standby is away is not acknowledged (the commit
    /// waits for it), and the acknowledged ones hold after the failover on every replica. The
    /// promoted standby has no synchronous standby of its own: a change is then refused, nothing
    /// written, rather than acknowledged without one.
    @Test func aSynchronousStandbyLosesNoAcknowledgedRevocation() async throws {
        try await withFleet { fleet in
            try await fleet.primary.setSynchronousStandbys("*")
            let a = try await fleet.startReplica(requireStandby: true)
            let b = try await fleet.startReplica(requireStandby: true)
            let (adminA, adminB) = (a.client(token: a.adminToken), b.client(token: a.adminToken))
            var keys: [CreateKeyResponse] = []
            for number in 0..<4 {
                keys.append(try await adminA.createKey(name: "key \(number)", permissions: ["jobs:read"]))
            }
            try await fleet.standby.stop()
            // The commit waits for the standby: no acknowledgement.
            await #expect(throws: APIKeysClientError.self) {
                _ = try await adminA.setKeyEnabled(id: keys[3].key.id, enabled: false, timeout: .seconds(1))
            }
            try await fleet.standby.start()
            for key in keys[0..<2] { _ = try await adminA.setKeyEnabled(id: key.key.id, enabled: false) }
            _ = try await adminA.rotateKey(id: keys[2].key.id)
            try await fleet.standby.stop()

            try await fleet.failOver(startingTheStandby: true)
            let c = try await fleet.startReplica(requireStandby: true)
            let adminC = c.client(token: a.adminToken)
            await waitForDenial([adminA, adminB, adminC], keys[0].secret, .disabled, within: .seconds(15))
            await waitForDenial([adminA, adminB, adminC], keys[1].secret, .disabled, within: .seconds(1))
            await waitForDenial([adminA, adminB, adminC], keys[2].secret, .unknownKey, within: .seconds(1))
            for replica in [a, b] { #expect(replica.server.service.replicaHistoryRewrites?.changesLost == 0) }

            let refused = await #expect(throws: APIKeysClientError.self) {
                _ = try await adminB.setKeyEnabled(id: keys[3].key.id, enabled: true)
            }
            #expect(refused?.code == .unavailable)
            #expect(
                try await adminC.getKey(id: keys[3].key.id).enabled
                    == (await answer(adminC, keys[3].secret)?.decision == .allow))
            for client in [adminA, adminB, adminC] { await client.close() }
        }
    }
}
