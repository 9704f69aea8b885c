import APIKeysCore
import APIKeysTestSupport
import Foundation
import Testing
@testable import APIKeysSQLite
@_spi(Testing) @testable import APIKeysStore

@Suite struct AuditTrailTests {
    let clock = ManualWallClock(nowMS: 1_700_000_000_000)

    @Test(arguments: StoreKind.available)
    func checksOfWellFormedKeysAreRecorded(_ store: StoreKind) async throws {
        try await withService(store, clock: clock) { service, _ in
            let issued = try await service.createKey(name: "ci", permissions: ["jobs:read"], actor: "ops")
            _ = try service.check(
                secret: issued.secret, permissions: ["jobs:read"], resource: "GET /jobs", clientAddress: "10.1.1.1")
            _ = try service.check(
                secret: "Bearer " + issued.secret, permissions: ["vault:read"], resource: "GET /vault")
            _ = try service.check(secret: service.format.generate(), permissions: [])  // unknown: recorded
            _ = try service.check(secret: "dbm_nope", permissions: [])  // malformed: not recorded
            await service.flushAuditTrail()

            let events = try await service.listAuditEvents(AuditQuery(action: .apiRequest)).events
            #expect(events.count == 3)
            #expect(events.allSatisfy { $0.trigger == .api })
            #expect(events[0].denial == .unknownKey && events[0].keyID.isEmpty)
            #expect(events[1].denial == .missingPermission)
            #expect(events[1].keyID == issued.key.id && events[1].keyName == "ci")
            #expect(events[1].permissions == ["vault:read"])
            #expect(events[2].denial == nil)
            #expect(events[2].resource == "GET /jobs" && events[2].clientAddress == "10.1.1.1")
            #expect(try await service.getKey(id: issued.key.id).lastUsedAtMS == clock.nowMS())
        }
    }

    @Test(arguments: StoreKind.available)
    func queryByKeyActionAndTimeWithPagination(_ store: StoreKind) async throws {
        try await withService(store, clock: clock) { service, _ in
            let start = clock.nowMS()
            let a = try await service.createKey(name: "a", permissions: ["jobs:read"], actor: "ops")
            for _ in 0..<5 {
                clock.advance(byMS: 1000)
                _ = try service.check(secret: a.secret, permissions: [])
            }
            clock.advance(byMS: 1000)
            let b = try await service.createKey(name: "b", permissions: ["jobs:read"], actor: "ops")
            try await service.deleteKey(id: a.key.id, actor: "ops")
            await service.flushAuditTrail()

            let ofA = try await service.listAuditEvents(AuditQuery(keyID: a.key.id)).events
            #expect(ofA.count == 7)  // created, 5 checks, deleted: events of a deleted key stay
            #expect(ofA.first?.action == .keyDeleted && ofA.last?.action == .keyCreated)
            #expect(
                try await service.listAuditEvents(AuditQuery(keyID: b.key.id)).events.map(\.action) == [.keyCreated])
            #expect(
                try await service.listAuditEvents(AuditQuery(action: .keyCreated)).events.map(\.keyID) == [
                    b.key.id, a.key.id,
                ])

            let window = try await service.listAuditEvents(AuditQuery(sinceMS: start + 2000, untilMS: start + 4000))
                .events
            #expect(window.map(\.atMS) == [start + 3000, start + 2000])

            var pages: [[UInt64]] = []
            var token: String?
            repeat {
                let page = try await service.listAuditEvents(AuditQuery(), pageSize: 3, pageToken: token)
                pages.append(page.events.map(\.seq))
                token = page.nextPageToken
            } while token != nil
            let all = pages.flatMap { $0 }
            #expect(pages.count == 3)
            #expect(all.count == 8)
            #expect(all == all.sorted(by: >))
        }
    }

    @Test func aggregatedModeCountsAllowedChecksPerSecondAndKeepsDenials() async throws {
        try await withTemporaryDirectory { dir in
            let service = try KeyService.open(path: dir + "/apikeys.sqlite", clock: clock, auditMode: .aggregated)
            defer { service.close() }
            let key = try await service.createKey(name: "busy", permissions: ["jobs:read"], actor: "ops")
            for _ in 0..<5 { _ = try service.check(secret: key.secret, permissions: ["jobs:read"], resource: "GET /a") }
            _ = try service.check(secret: key.secret, permissions: [], resource: "GET /b")
            _ = try service.check(secret: key.secret, permissions: ["vault:read"], resource: "GET /v")
            clock.advance(byMS: 1000)
            for _ in 0..<3 { _ = try service.check(secret: key.secret, permissions: ["jobs:read"]) }
            await service.flushAuditTrail()

            let events = try await service.listAuditEvents(AuditQuery(action: .apiRequest)).events
            #expect(events.count == 4)
            let denied = events.filter { $0.denial != nil }
            #expect(denied.count == 1 && denied[0].resource == "GET /v")
            let allowed = events.filter { $0.denial == nil }.map { ($0.permissions, $0.detail, $0.atMS) }
            #expect(
                allowed.contains {
                    $0 == (["jobs:read"], "aggregated: 5 allowed checks in this second", 1_700_000_000_000)
                })
            #expect(allowed.contains { $0 == ([], "aggregated: 1 allowed check in this second", 1_700_000_000_000) })
            #expect(
                allowed.contains {
                    $0 == (["jobs:read"], "aggregated: 3 allowed checks in this second", 1_700_000_001_000)
                })
            #expect(try await service.getKey(id: key.key.id).lastUsedAtMS == clock.nowMS())
        }
    }
    /// api.request events are stored in batches, admin events as rows: pages, key filters and time
    /// windows must merge both exactly, across many batches.
    @Test(arguments: StoreKind.available)
    func pagesAndFiltersMergeBatchesWithAdminEvents(_ store: StoreKind) async throws {
        try await withService(store, clock: clock) { service, _ in
            let start = clock.nowMS()
            let a = try await service.createKey(name: "a", permissions: ["jobs:read"], actor: "ops")
            let b = try await service.createKey(name: "b", permissions: ["jobs:read"], actor: "ops")
            for round in 0..<6 {
                clock.advance(byMS: 1000)
                for i in 0..<(round + 2) {
                    let key = i % 2 == 0 ? a : b
                    _ = try service.check(secret: key.secret, permissions: ["jobs:read"], resource: "r\(round).\(i)")
                }
                await service.flushAuditTrail()  // each round is a batch of its own
                _ = try await service.setEnabled(id: b.key.id, enabled: round % 2 != 0, actor: "ops")
            }
            let many = (0..<CheckLimits.maxPermissions).map { "p\($0)" }  // the most one check may ask for
            _ = try service.check(secret: a.secret, permissions: many)
            await service.flushAuditTrail()

            let all = try await allEvents(service, AuditQuery(), pageSize: 1000)
            let checks = 2 + 3 + 4 + 5 + 6 + 7 + 1
            #expect(all.count == 2 + checks + 6)
            #expect(all.map(\.seq) == all.map(\.seq).sorted(by: >))
            #expect(Set(all.map(\.seq)).count == all.count)
            #expect(all.first?.permissions == many)

            for size in [1, 2, 5, 7] {
                let paged = try await allEvents(service, AuditQuery(), pageSize: size)
                #expect(paged.map(\.seq) == all.map(\.seq))
            }
            let ofB = try await allEvents(service, AuditQuery(keyID: b.key.id), pageSize: 4)
            #expect(ofB.map(\.seq) == all.filter { $0.keyID == b.key.id }.map(\.seq))
            let checksOfB = 1 + 1 + 2 + 2 + 3 + 3
            #expect(ofB.filter { $0.action == .apiRequest }.count == checksOfB)
            let requests = try await allEvents(service, AuditQuery(action: .apiRequest), pageSize: 3)
            #expect(requests.count == checks)
            let disabled = try await allEvents(service, AuditQuery(action: .keyDisabled), pageSize: 2)
            #expect(disabled.count == 3)

            let window = AuditQuery(sinceMS: start + 2000, untilMS: start + 4000)
            let inWindow = try await allEvents(service, window, pageSize: 2)
            #expect(inWindow.map(\.seq) == all.filter { $0.atMS >= start + 2000 && $0.atMS < start + 4000 }.map(\.seq))
            #expect(inWindow.filter { $0.action == .apiRequest }.count == 3 + 4)
            #expect(try await allEvents(service, AuditQuery(untilMS: start), pageSize: 10).isEmpty)
            #expect(try await allEvents(service, AuditQuery(sinceMS: start + 60_000), pageSize: 10).isEmpty)
        }
    }

    @Test func largeBatchesAreSplitAndSeqsContinueAfterRestart() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/apikeys.sqlite"
            let valve = AuditSinkValve()
            var service = try openSQLiteService(path: path, clock: clock, valve: valve)
            let key = try await service.createKey(name: "busy", permissions: ["jobs:read"], actor: "ops")
            valve.hold()
            let count = APIRequestPacking.maxEventsPerRow * 2 + 11
            _ = try service.check(secret: key.secret, permissions: ["jobs:read"])
            try #require(valve.waitForAHeldWrite())
            for _ in 1..<count { _ = try service.check(secret: key.secret, permissions: ["jobs:read"]) }
            // The first check is the batch the held write waits with; the rest queue behind it and
            // are written in one transaction, several batch rows.
            valve.release()
            service.close()

            service = try KeyService.open(path: path, clock: clock)
            defer { service.close() }
            _ = try service.check(secret: key.secret, permissions: [])
            _ = try await service.setEnabled(id: key.key.id, enabled: false, actor: "ops")
            await service.flushAuditTrail()
            let all = try await allEvents(service, AuditQuery(keyID: key.key.id), pageSize: 1000)
            #expect(all.count == count + 3)
            #expect(Set(all.map(\.seq)).count == all.count)
            #expect(all[0].action == .keyDisabled && all[1].action == .apiRequest && all[1].permissions.isEmpty)
            #expect(all.map(\.seq) == all.map(\.seq).sorted(by: >))
            let reader = try SQLiteConnection(path: path)
            defer { reader.close() }
            let rows = try reader.statement("SELECT count(*) FROM api_request_batches").firstRow { $0.int64(0) }
            // Each link of the hash chain (at most AuditChain.maxEventsPerLink events, as many as
            // a batch row holds) is one row here: the first check, then 2048, 2048 and 10 checks,
            // and the check after the restart.
            let links = (count - 1 + AuditChain.maxEventsPerLink - 1) / AuditChain.maxEventsPerLink
            #expect(rows == Int64(1 + links + 1))
        }
    }

    /// Batch times never decrease with seq (time-window queries rely on it), even when the
    /// clock is behind the stored trail after a restart.
    @Test func checkTimesNeverGoBackEvenAfterARestartWithAnEarlierClock() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/apikeys.sqlite"
            let late = ManualWallClock(nowMS: 1_700_000_100_000)
            var service = try KeyService.open(path: path, clock: late)
            let key = try await service.createKey(name: "k", permissions: ["jobs:read"], actor: "ops")
            _ = try service.check(secret: key.secret, permissions: [])
            service.close()

            service = try KeyService.open(path: path, clock: ManualWallClock(nowMS: 1_700_000_000_000))
            defer { service.close() }
            _ = try service.check(secret: key.secret, permissions: [])
            await service.flushAuditTrail()
            let checks = try await allEvents(service, AuditQuery(action: .apiRequest), pageSize: 10)
            #expect(checks.map(\.atMS) == [1_700_000_100_000, 1_700_000_100_000])
            let window = AuditQuery(action: .apiRequest, sinceMS: 1_700_000_100_000)
            #expect(try await allEvents(service, window, pageSize: 10).count == 2)
        }
    }

    @Test func aCorruptBatchIsReportedNotSkipped() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/apikeys.sqlite"
            let service = try KeyService.open(path: path, clock: clock)
            defer { service.close() }
            let key = try await service.createKey(name: "k", permissions: ["jobs:read"], actor: "ops")
            _ = try service.check(secret: key.secret, permissions: [])
            await service.flushAuditTrail()
            let other = try SQLiteConnection(path: path)
            defer { other.close() }
            try other.execute("UPDATE api_request_batches SET events = x'01020304'")
            await #expect {
                try await service.listAuditEvents(AuditQuery())
            } throws: { error in
                guard let error = error as? StoreError, error.code == .corrupt, let message = error.message else {
                    return false
                }
                return message.contains("api.request batch")
            }
        }
    }
}

/// Every event matching `query`, read page by page.
private func allEvents(_ service: KeyService, _ query: AuditQuery, pageSize: Int) async throws -> [AuditRecord] {
    var events: [AuditRecord] = []
    var token: String?
    repeat {
        let page = try await service.listAuditEvents(query, pageSize: pageSize, pageToken: token)
        #expect(page.events.count <= pageSize)
        events += page.events
        token = page.nextPageToken
    } while token != nil
    return events
}
