import APIKeysClient
import APIKeysCore
@_spi(Testing) import APIKeysStore
import APIKeysTestSupport
import APIKeysSQLite
import Foundation
import Testing

/// A shutdown is bounded by its timeout even when the disk refuses the audit trail, and says
/// what it could not write.
@Suite struct ShutdownTests {
    // A guard against a hang, not a measure: alone it takes ~3 s, beside the whole suite on two
    // cores over a minute (the bound that matters is the shutdown's, below).
    @Test(.timeLimit(.minutes(3)))
    func aShutdownOnAFailingDiskEndsInTimeAndCountsWhatItLost() async throws {
        let dir = try makeTemporaryDirectory("apikeyd-shutdown")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try await TestServer.start(
            dataDirectory: dir, clock: ManualWallClock(nowMS: 1_700_000_000_000),
            configure: { $0.shutdownTimeoutSeconds = 1 })
        let client = server.client()
        let key = try await client.createKey(name: "k", permissions: ["jobs:read"])
        await server.server.service.flushAuditTrail()
        try server.server.service.simulateFullDisk(true)
        // ~2 MB of events: more than the free space left in the database's pages.
        let resource = String(repeating: "r", count: 1000)
        let checks = 2000
        for _ in 0..<checks {
            _ = try await client.check(key: key.secret, permissions: ["jobs:read"], resource: resource)
        }
        await client.close()
        let start = ContinuousClock.now
        let report = await server.server.shutdown()
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(report.unwrittenAuditEvents > 0)
        // Every check is either in the trail or counted as lost: none vanished unreported.
        let store = try KeyService.open(path: dir + "/apikeys.sqlite")
        let stored = try await store.listAuditEvents(AuditQuery(action: .apiRequest), pageSize: 1000)
        var persisted = stored.events.count
        var token = stored.nextPageToken
        while let next = token {
            let page = try await store.listAuditEvents(AuditQuery(action: .apiRequest), pageSize: 1000, pageToken: next)
            persisted += page.events.count
            token = page.nextPageToken
        }
        await store.close(timeout: .seconds(5))
        #expect(persisted + report.unwrittenAuditEvents == checks)
        // A second shutdown has nothing left to do.
        #expect(await server.server.shutdown().unwrittenAuditEvents == 0)
    }

    @Test func aShutdownWithAHealthyDiskLosesNothing() async throws {
        try await withServer { server, client in
            let key = try await client.createKey(name: "k", permissions: ["jobs:read"])
            for _ in 0..<50 { _ = try await client.check(key: key.secret, permissions: ["jobs:read"]) }
            #expect(await server.server.shutdown().unwrittenAuditEvents == 0)
        }
    }
}
