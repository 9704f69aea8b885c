import APIKeysCore
import APIKeysTestSupport
import Testing
@testable import APIKeysPostgres
@testable import APIKeysSQLite
@testable import APIKeysStore

/// The PostgreSQL change log is pruned, and a replica that missed pruned changes fails closed.
@Suite(
    .enabled(if: TestDatabase.url != nil, "needs PostgreSQL (Tests/postgres/with-cluster.sh)"), .timeLimit(.minutes(2)))
struct ChangeLogTests {
    /// A replica cut off while a key is deleted, then the change pruned: it cannot learn of the
    /// deletion from the log, so it refuses every check (instead of allowing the deleted key)
    /// until restarted; a replica that had followed is unaffected, and a restarted one is current.
    @Test func aReplicaThatMissedPrunedChangesFailsClosedUntilRestarted() async throws {
        let url = try await TestDatabase.createDatabase()
        let clock = ManualWallClock(nowMS: 1_700_000_000_000)
        let a = try await TestDatabase.openService(clock: clock, url: url)
        let b = try await TestDatabase.openService(clock: clock, url: url)
        let feedA = try #require((a.store as? PostgresKeyStore)?.feed)
        let feedB = try #require((b.store as? PostgresKeyStore)?.feed)
        let doomed = try await a.createKey(name: "doomed", permissions: ["jobs:read"], actor: "ops")
        try await feedB.catchUp()
        #expect(try b.check(secret: doomed.secret, permissions: ["jobs:read"]).isAllowed)

        await feedB.stop()  // B is cut off from here on
        try await a.deleteKey(id: doomed.key.id, actor: "ops")
        for index in 0..<3 {
            _ = try await a.createKey(name: "later\(index)", permissions: ["jobs:read"], actor: "ops")
        }

        // Nothing is younger than the retention: nothing is pruned.
        #expect(try await feedA.prune(nowMS: clock.nowMS(), keep: 0) == 0)
        clock.advance(byMS: ChangeFeed.retentionMS + 1)
        // All but the newest change go.
        #expect(try await feedA.prune(nowMS: clock.nowMS(), keep: 0) == 4)
        #expect(try await feedA.prune(nowMS: clock.nowMS(), keep: 0) == 0)

        try await feedA.catchUp()
        #expect(a.freshnessProblem == nil)
        #expect(try a.check(secret: doomed.secret, permissions: ["jobs:read"]).denial == .unknownKey)

        await #expect(throws: StoreError.outrun) { try await feedB.catchUp() }
        #expect(b.freshnessProblem == StoreError.outrun.description)
        #expect(throws: StoreError.outrun) { try b.check(secret: doomed.secret, permissions: ["jobs:read"]) }
        await #expect(throws: StoreError.outrun) { try await feedB.catchUp() }

        let restarted = try await TestDatabase.openService(clock: clock, url: url)
        #expect(try restarted.check(secret: doomed.secret, permissions: ["jobs:read"]).denial == .unknownKey)
        #expect(restarted.freshnessProblem == nil)
        for service in [a, b, restarted] { await service.close(timeout: .seconds(10)) }
    }

    /// An allowlist reaches another replica both ways: loaded at start, and by the change feed.
    @Test func allowlistsReachOtherReplicas() async throws {
        let url = try await TestDatabase.createDatabase()
        let clock = ManualWallClock(nowMS: 1_700_000_000_000)
        let a = try await TestDatabase.openService(clock: clock, url: url)
        let key = try await a.createKey(
            name: "fenced", permissions: ["jobs:read"], allowedNetworks: ["10.0.0.0/8"], actor: "ops")
        let b = try await TestDatabase.openService(clock: clock, url: url)
        #expect(try b.check(secret: key.secret, permissions: [], clientAddress: "10.1.1.1").isAllowed)
        #expect(try b.check(secret: key.secret, permissions: [], clientAddress: "192.0.2.1").denial == .ipNotAllowed)
        #expect(try await b.getKey(id: key.key.id).allowedNetworks == ["10.0.0.0/8"])

        _ = try await a.updateKey(id: key.key.id, allowedNetworks: ["192.0.2.0/24"], actor: "ops")
        try await #require((b.store as? PostgresKeyStore)?.feed).catchUp()
        #expect(try b.check(secret: key.secret, permissions: [], clientAddress: "192.0.2.1").isAllowed)
        #expect(try b.check(secret: key.secret, permissions: [], clientAddress: "10.1.1.1").denial == .ipNotAllowed)
        for service in [a, b] { await service.close(timeout: .seconds(10)) }
    }

    /// The catch-up query (every 250 ms and every NOTIFY, on every replica) reads the change log by
    /// its primary key however it grew since its plan was made: prepared on a short log (a generic
    /// plan is kept until the table's statistics change), it holds no scan of `key_changes` once
    /// the log is long. (The history probe as `NOT EXISTS` was planned as a hash of the whole log.)
    @Test func theCatchUpQueryReadsTheChangeLogByItsPrimaryKey() async throws {
        let url = try await TestDatabase.createDatabase()
        let service = try await TestDatabase.openService(clock: ManualWallClock(nowMS: 1_700_000_000_000), url: url)
        await service.close(timeout: .seconds(10))
        let insert = { (count: Int) in
            """
            INSERT INTO key_changes (at_ms, op, key_id, secret_hash, name, permissions, enabled)
            SELECT 0, 1, 'key_' || i, sha256(i::text::bytea), 'k', '', true FROM generate_series(1, \(count)) AS i;
            """
        }
        try await TestDatabase.psql(url, insert(250) + "ANALYZE key_changes")
        let plans = try await TestDatabase.psql(
            url,
            """
            SET plan_cache_mode = force_generic_plan; PREPARE catch_up AS \(ChangeRows.ChangesSince.sql);
            EXPLAIN EXECUTE catch_up('{1,2,3}', 1, 2000); \(insert(20_000)) SELECT '-- grown';
            EXPLAIN EXECUTE catch_up('{1,2,3}', 1, 2000)
            """)
        let grown = try #require(plans.components(separatedBy: "-- grown").last)
        #expect(grown.contains("key_changes_pkey"), "\(grown)")
        #expect(!grown.contains("Seq Scan on key_changes"), "\(grown)")
    }
}
