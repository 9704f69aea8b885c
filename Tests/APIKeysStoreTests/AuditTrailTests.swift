import APIKeysCore
import APIKeysTestSupport
import Foundation
import Testing
@testable import APIKeysStore

@Suite struct AuditTrailTests {
    let clock = ManualWallClock(nowMS: 1_700_000_000_000)

    @Test func checksOfWellFormedKeysAreRecorded() throws {
        try withService(clock: clock) { service, _ in
            let issued = try service.createKey(name: "ci", permissions: ["jobs:read"], actor: "ops")
            _ = try service.check(
                secret: issued.secret, permissions: ["jobs:read"], resource: "GET /jobs", clientAddress: "10.1.1.1")
            _ = try service.check(
                secret: "Bearer " + issued.secret, permissions: ["vault:read"], resource: "GET /vault")
            _ = try service.check(secret: service.format.generate(), permissions: [])  // unknown: recorded
            _ = try service.check(secret: "dbm_nope", permissions: [])  // malformed: not recorded
            service.flushAuditTrail()

            let events = try service.listAuditEvents(AuditQuery(action: .apiRequest)).events
            #expect(events.count == 3)
            #expect(events.allSatisfy { $0.trigger == .api })
            #expect(events[0].denial == .unknownKey && events[0].keyID.isEmpty)
            #expect(events[1].denial == .missingPermission)
            #expect(events[1].keyID == issued.key.id && events[1].keyName == "ci")
            #expect(events[1].permissions == ["vault:read"])
            #expect(events[2].denial == nil)
            #expect(events[2].resource == "GET /jobs" && events[2].clientAddress == "10.1.1.1")
            #expect(try service.getKey(id: issued.key.id).lastUsedAtMS == clock.nowMS())
        }
    }

    @Test func queryByKeyActionAndTimeWithPagination() throws {
        try withService(clock: clock) { service, _ in
            let start = clock.nowMS()
            let a = try service.createKey(name: "a", permissions: ["jobs:read"], actor: "ops")
            for _ in 0..<5 {
                clock.advance(byMS: 1000)
                _ = try service.check(secret: a.secret, permissions: [])
            }
            clock.advance(byMS: 1000)
            let b = try service.createKey(name: "b", permissions: ["jobs:read"], actor: "ops")
            try service.deleteKey(id: a.key.id, actor: "ops")
            service.flushAuditTrail()

            let ofA = try service.listAuditEvents(AuditQuery(keyID: a.key.id)).events
            #expect(ofA.count == 7)  // created, 5 checks, deleted: events of a deleted key stay
            #expect(ofA.first?.action == .keyDeleted && ofA.last?.action == .keyCreated)
            #expect(try service.listAuditEvents(AuditQuery(keyID: b.key.id)).events.map(\.action) == [.keyCreated])
            #expect(
                try service.listAuditEvents(AuditQuery(action: .keyCreated)).events.map(\.keyID) == [
                    b.key.id, a.key.id,
                ])

            let window = try service.listAuditEvents(AuditQuery(sinceMS: start + 2000, untilMS: start + 4000)).events
            #expect(window.map(\.atMS) == [start + 3000, start + 2000])

            var pages: [[UInt64]] = []
            var token: String?
            repeat {
                let page = try service.listAuditEvents(AuditQuery(), pageSize: 3, pageToken: token)
                pages.append(page.events.map(\.seq))
                token = page.nextPageToken
            } while token != nil
            let all = pages.flatMap { $0 }
            #expect(pages.count == 3)
            #expect(all.count == 8)
            #expect(all == all.sorted(by: >))
        }
    }

    @Test func aggregatedModeCountsAllowedChecksPerSecondAndKeepsDenials() throws {
        try withTemporaryDirectory { dir in
            let service = try KeyService.open(path: dir + "/apikeys.sqlite", clock: clock, auditMode: .aggregated)
            defer { service.close() }
            let key = try service.createKey(name: "busy", permissions: ["jobs:read"], actor: "ops")
            for _ in 0..<5 { _ = try service.check(secret: key.secret, permissions: ["jobs:read"], resource: "GET /a") }
            _ = try service.check(secret: key.secret, permissions: [], resource: "GET /b")
            _ = try service.check(secret: key.secret, permissions: ["vault:read"], resource: "GET /v")
            clock.advance(byMS: 1000)
            for _ in 0..<3 { _ = try service.check(secret: key.secret, permissions: ["jobs:read"]) }
            service.flushAuditTrail()

            let events = try service.listAuditEvents(AuditQuery(action: .apiRequest)).events
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
            #expect(try service.getKey(id: key.key.id).lastUsedAtMS == clock.nowMS())
        }
    }
}
