import APIKeysCore
import APIKeysTestSupport
import Foundation
import Testing
@testable import APIKeysSQLite
@_spi(Testing) @testable import APIKeysStore

/// Audit events older than the retention are pruned in whole batches and rows, the pruning is
/// itself recorded, the space is given back, and the oldest time kept is known.
@Suite struct RetentionTests {
    static let day: Int64 = 86_400_000

    @Test func eventsOlderThanTheRetentionArePrunedAndTheSpaceReclaimed() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/apikeys.sqlite"
            let clock = ManualWallClock(nowMS: 1_700_000_000_000)
            let start = clock.nowMS()
            let service = try KeyService.open(
                path: path, clock: clock, auditRetentionMS: 30 * Self.day, adminAuditRetentionMS: 30 * Self.day)
            defer { service.close() }
            let key = try await service.createKey(name: "k", permissions: ["jobs:read"], actor: "ops")
            let resource = String(repeating: "r", count: 200)
            let oldChecks = 20_000
            // Each resource another: a batch stores a resource that repeats the previous one's once.
            for index in 0..<oldChecks {
                _ = try service.check(secret: key.secret, permissions: ["jobs:read"], resource: "\(index) \(resource)")
            }
            await service.flushAuditTrail()
            let pages = try SQLiteConnection(path: path)
            defer { pages.close() }
            let before = try #require(try pages.statement("PRAGMA page_count").firstRow { $0.int64(0) })
            print("audit retention: \(before * 4096 / Int64(oldChecks)) bytes per event on disk (200-byte resource)")

            clock.advance(byMS: 31 * Self.day)
            let recent = try service.check(secret: key.secret, permissions: ["jobs:read"], resource: "recent")
            #expect(recent.isAllowed)
            await service.flushAuditTrail()
            service.pruneAuditTrailNow()

            let all = try await service.listAuditEvents(AuditQuery(), pageSize: 1000).events
            #expect(all.filter { $0.action == .apiRequest }.map(\.resource) == ["recent"])
            #expect(!all.contains { $0.action == .keyCreated })  // older than the history's retention too
            let pruned = try #require(all.first { $0.action == .auditPruned })
            #expect(pruned.actor == "retention" && pruned.atMS == clock.nowMS())
            #expect(pruned.detail.hasPrefix("pruned \(oldChecks + 1) events"), "\(pruned.detail)")
            let retention = try await service.auditRetention()
            #expect(retention.retentionMS == 30 * Self.day)
            #expect(retention.oldestRetainedAtMS == start + 31 * Self.day)
            // The freed pages went back to the file system, not just to SQLite's free list.
            let after = try #require(try pages.statement("PRAGMA page_count").firstRow { $0.int64(0) })
            #expect(after * 4 < before, "page count \(before) → \(after)")
            // The key itself stays: retention prunes the trail, never keys.
            #expect(try await service.getKey(id: key.key.id).name == "k")
        }
    }

    @Test func withoutRetentionNothingIsPruned() async throws {
        let clock = ManualWallClock(nowMS: 1_700_000_000_000)
        try await withService(clock: clock) { service, _ in
            let key = try await service.createKey(name: "k", permissions: ["jobs:read"], actor: "ops")
            _ = try service.check(secret: key.secret, permissions: ["jobs:read"])
            clock.advance(byMS: 3650 * Self.day)
            await service.flushAuditTrail()
            service.pruneAuditTrailNow()
            #expect(try await service.listAuditEvents(AuditQuery()).events.count == 2)
            #expect(try await service.auditRetention().retentionMS == 0)
        }
    }

    @Test func seqsKeepIncreasingAfterEverythingOldWasPruned() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/apikeys.sqlite"
            let clock = ManualWallClock(nowMS: 1_700_000_000_000)
            var service = try KeyService.open(
                path: path, clock: clock, auditRetentionMS: Self.day, adminAuditRetentionMS: Self.day)
            let key = try await service.createKey(name: "k", permissions: ["jobs:read"], actor: "ops")
            for _ in 0..<10 { _ = try service.check(secret: key.secret, permissions: []) }
            await service.flushAuditTrail()
            let highest = try #require(try await service.listAuditEvents(AuditQuery()).events.map(\.seq).max())
            clock.advance(byMS: 2 * Self.day)
            service.pruneAuditTrailNow()
            let kept = try await service.listAuditEvents(AuditQuery()).events
            #expect(!kept.contains { $0.seq <= highest }, "the old events were not pruned")
            service.close()
            service = try KeyService.open(
                path: path, clock: clock, auditRetentionMS: Self.day, adminAuditRetentionMS: Self.day)
            defer { service.close() }
            _ = try service.check(secret: key.secret, permissions: [])
            await service.flushAuditTrail()
            let seqs = try await service.listAuditEvents(AuditQuery()).events.map(\.seq)
            #expect(!seqs.isEmpty)
            #expect(seqs.allSatisfy { $0 > highest }, "a seq was handed out twice: \(seqs) vs \(highest)")
        }
    }
}
