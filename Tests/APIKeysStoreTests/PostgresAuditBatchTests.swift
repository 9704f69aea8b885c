import APIKeysCore
import APIKeysTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing
@testable import APIKeysPostgres
@_spi(Testing) @testable import APIKeysStore

/// `api.request` events on PostgreSQL as packed batches (migration 12): the batches of several
/// replicas overlap in seq, rows written by earlier versions stay readable beside them, and an
/// earlier version refuses the migrated schema by name.
@Suite(
    .enabled(if: TestDatabase.url != nil, "needs PostgreSQL (Tests/postgres/with-cluster.sh)"), .timeLimit(.minutes(2)))
struct PostgresAuditBatchTests {
    let start: Int64 = 1_700_000_000_000

    /// Three replicas check keys in turn: the first one's writer is held throughout, so that it
    /// writes its checks as a few long batches (1.8 s of them, cut at
    /// ``APIRequestBatchRows/maxSeqSpan``) that the many short batches of the other two (flushed
    /// every few checks) overlap. A page read newest batch first must still find the long ones'
    /// newest events. Every way of paging finds each check once, newest first, and the chain
    /// verifies.
    @Test func overlappingBatchesOfThreeReplicasPageWithoutLossOrRepeat() async throws {
        let url = try await TestDatabase.createDatabase()
        let clock = ManualWallClock(nowMS: start)
        let valves = [AuditSinkValve(), AuditSinkValve(), AuditSinkValve()]
        var replicas: [KeyService] = []
        for valve in valves {
            replicas.append(try await TestDatabase.openService(clock: clock, url: url, valve: valve))
        }
        var keys: [KeyService.IssuedKey] = []
        for name in ["a", "b", "c"] {
            keys.append(try await replicas[0].createKey(name: name, permissions: ["jobs:read"], actor: "ops"))
        }
        for replica in replicas { try await #require((replica.store as? PostgresKeyStore)?.feed).catchUp() }

        valves[0].hold()
        var checks: [String: [Int64]] = [:]  // key id -> times of its checks
        for round in 0..<600 {
            clock.advance(byMS: 3)
            let key = keys[(round / 3 + round) % 3]
            _ = try replicas[round % 3].check(secret: key.secret, permissions: ["jobs:read"], resource: "GET /\(round)")
            checks[key.key.id, default: []].append(clock.nowMS())
            if round % 6 == 5 {
                await replicas[1].flushAuditTrail()
                await replicas[2].flushAuditTrail()
            }
        }
        valves[0].release()
        for replica in replicas { await replica.flushAuditTrail() }

        let service = replicas[1]
        let all = try await pages(service, AuditQuery(), pageSize: 1000)
        #expect(all.count == 600 + 3)
        #expect(try await pages(service, AuditQuery(), pageSize: 7).map(\.seq) == all.map(\.seq))
        let requests = all.filter { $0.action == .apiRequest }
        #expect(requests.map(\.seq) == requests.map(\.seq).sorted(by: >))
        #expect(Set(requests.map(\.seq)).count == 600)
        for key in keys {
            let ofKey = try await pages(service, AuditQuery(keyID: key.key.id), pageSize: 5)
            #expect(ofKey.map(\.seq) == all.filter { $0.keyID == key.key.id }.map(\.seq))
            #expect(ofKey.filter { $0.action == .apiRequest }.map(\.atMS).sorted() == checks[key.key.id])
        }
        let window = AuditQuery(action: .apiRequest, sinceMS: start + 300, untilMS: start + 900)
        let inWindow = try await pages(service, window, pageSize: 9)
        let expected = requests.filter { (start + 300..<start + 900).contains($0.atMS) }
        #expect(inWindow.map(\.seq) == expected.map(\.seq))
        #expect(inWindow.count == 200)
        _ = try await service.verifyAuditChain()

        let stored = try await TestDatabase.psql(
            url,
            """
            SELECT count(*), max(last_seq - first_seq) <= \(APIRequestBatchRows.maxSeqSpan),
                   (SELECT count(*) FROM audit_events WHERE action = 'api.request')
            FROM api_request_batches
            """)
        let columns = stored.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "|")
        #expect(columns.count == 3 && Int(columns[0]) ?? 0 >= 100, "\(stored)")
        #expect(columns.count == 3 && columns[1] == "t" && columns[2] == "0", "\(stored)")
        for replica in replicas { await replica.close(timeout: .seconds(10)) }
    }

    /// A trail written by an earlier version (every check a row of `audit_events`, in links of
    /// the chain) reads after migration 12 merged with the batches written since, verifies, and
    /// is pruned with them.
    @Test func rowsOfEarlierVersionsReadAndArePrunedWithTheBatches() async throws {
        let url = try await TestDatabase.createDatabase()
        let clock = ManualWallClock(nowMS: start)
        let day: Int64 = 86_400_000
        let service = try await TestDatabase.openService(clock: clock, auditRetentionMS: day, url: url)
        let key = try await service.createKey(name: "old", permissions: ["jobs:read"], actor: "ops")
        let old = (0..<50).map { index in
            AuditRecord(
                seq: UInt64(start + 1 + Int64(index)) << 20 | 0xFF << 12, atMS: start + 1 + Int64(index),
                action: .apiRequest, keyID: key.key.id, keyName: "old", permissions: ["jobs:read"],
                resource: "GET /old/\(index)")
        }
        try await writeAsRows(old, url: url)
        clock.advance(byMS: 1000)
        for index in 0..<30 {
            clock.advance(byMS: 1)
            _ = try service.check(secret: key.secret, permissions: ["jobs:read"], resource: "GET /new/\(index)")
        }
        await service.flushAuditTrail()

        let events = try await pages(service, AuditQuery(keyID: key.key.id, action: .apiRequest), pageSize: 8)
        #expect(events.count == 80)
        #expect(events.map(\.seq) == events.map(\.seq).sorted(by: >))
        #expect(events.suffix(50).map(\.resource) == old.reversed().map(\.resource))
        #expect(events.prefix(30).allSatisfy { $0.resource.hasPrefix("GET /new/") })
        _ = try await service.verifyAuditChain()

        clock.advance(byMS: 2 * day)
        service.pruneAuditTrailNow()
        #expect(try await pages(service, AuditQuery(action: .apiRequest), pageSize: 100).isEmpty)
        let left = try await TestDatabase.psql(
            url,
            """
            SELECT (SELECT count(*) FROM api_request_batches) + (SELECT count(*) FROM api_request_batch_keys)
                   + (SELECT count(*) FROM audit_events WHERE action = 'api.request')
            """)
        #expect(left.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
        _ = try await service.verifyAuditChain()
        await service.close(timeout: .seconds(10))
    }

    /// An apikeyd from before migration 12 begins its start by reading `schema_migrations`: on a
    /// migrated database that read fails with a message saying why. And this version refuses a
    /// schema newer than it knows in the same way.
    @Test func versionsOlderThanTheSchemaRefuseToStartByName() async throws {
        let url = try await TestDatabase.createDatabase()
        let clock = ManualWallClock(nowMS: start)
        let service = try await TestDatabase.openService(clock: clock, url: url)
        await service.close(timeout: .seconds(10))

        // What the previous version runs first (PostgresSchema.migrateLocked at 7aec9c1).
        let earlier = """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY, name text NOT NULL, applied_at_ms bigint NOT NULL);
            SELECT version FROM schema_migrations
            """
        do {
            try await TestDatabase.psql(url, earlier)
            Issue.record("an earlier version's start read the migrated schema")
        } catch {
            #expect("\(error)".contains("newer than this apikeyd"), "\(error)")
        }
        // Started again, this version finds its own record and starts.
        let again = try await TestDatabase.openService(clock: clock, url: url)
        await again.close(timeout: .seconds(10))

        try await TestDatabase.psql(url, "INSERT INTO apikeyd_schema VALUES (99, 'from the future', 0)")
        do {
            let newer = try await TestDatabase.openService(clock: clock, url: url)
            await newer.close(timeout: .seconds(10))
            Issue.record("a schema newer than this version was used")
        } catch {
            #expect("\(error)".contains("migration 99, newer than this apikeyd knows"), "\(error)")
        }
    }

    /// Writes `events` as an earlier version did: rows of `audit_events` in links of the chain.
    private func writeAsRows(_ events: [AuditRecord], url: String) async throws {
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let client = PostgresClient(
            configuration: try PostgresLocation(url: url).clientConfiguration, backgroundLogger: logger)
        let running = Task { await client.run() }
        defer { running.cancel() }
        try await client.withTransaction(logger: logger) { connection in
            try await AuditChainRows.append(events, packing: false, on: connection, logger: logger)
        }
    }

    private func pages(_ service: KeyService, _ query: AuditQuery, pageSize: Int) async throws -> [AuditRecord] {
        var events: [AuditRecord] = []
        var token: String?
        repeat {
            let page = try await service.listAuditEvents(query, pageSize: pageSize, pageToken: token)
            events += page.events
            token = page.nextPageToken
        } while token != nil
        return events
    }
}
