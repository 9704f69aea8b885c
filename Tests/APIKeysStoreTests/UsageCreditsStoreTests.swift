import APIKeysCore
import APIKeysTestSupport
import Foundation
import Testing
@testable import APIKeysSQLite
@_spi(Testing) @testable import APIKeysStore

/// Usage credits (issue 14, item 4) on both stores: spent by allowed checks, stored by the audit
/// writer with their events, kept across a restart, refilled by an update, and shared through
/// the database by replicas.
@Suite struct UsageCreditsStoreTests {
    let clock = ManualWallClock(nowMS: 1_700_000_000_000)

    @Test(arguments: StoreKind.available)
    func creditsAreSpentStoredAndRefilled(_ store: StoreKind) async throws {
        try await withReopenableStore(store, clock: clock) { open in
            var service = try await open()
            let issued = try await service.createKey(name: "metered", permissions: ["jobs:read"], uses: 3, actor: "ops")
            #expect(issued.key.usage == UsageGrant(granted: 3, spent: 0))
            #expect(try service.check(secret: issued.secret, permissions: ["vault:read"]).denial == .missingPermission)
            for _ in 0..<2 { #expect(try service.check(secret: issued.secret, permissions: ["jobs:read"]).isAllowed) }
            await service.flushAuditTrail()
            #expect(try await service.getKey(id: issued.key.id).usage?.remaining == 1)

            // A restart keeps what the audit trail holds: one left.
            await service.close(timeout: .seconds(10))
            service = try await open()
            #expect(try service.check(secret: issued.secret, permissions: []).isAllowed)
            let refused = try service.check(secret: issued.secret, permissions: [])
            #expect(refused.denial == .usageExceeded)
            await service.flushAuditTrail()
            #expect(try await service.getKey(id: issued.key.id).usage?.remaining == 0)

            // Refilled: five from now; then unlimited; a negative count is refused.
            let refilled = try await service.updateKey(id: issued.key.id, remainingUses: 5, actor: "ops")
            #expect(refilled.usage == UsageGrant(granted: 8, spent: 3))
            for _ in 0..<5 { #expect(try service.check(secret: issued.secret, permissions: []).isAllowed) }
            #expect(try service.check(secret: issued.secret, permissions: []).denial == .usageExceeded)
            await service.flushAuditTrail()
            await #expect(throws: KeyError.invalidUses(-2)) {
                try await service.updateKey(id: issued.key.id, remainingUses: -2, actor: "ops")
            }
            #expect(try await service.updateKey(id: issued.key.id, remainingUses: -1, actor: "ops").usage == nil)
            for _ in 0..<20 { #expect(try service.check(secret: issued.secret, permissions: []).isAllowed) }
            await service.flushAuditTrail()
            let updates = try await service.listAuditEvents(AuditQuery(keyID: issued.key.id, action: .keyUpdated))
                .events
            #expect(updates.map(\.detail) == ["uses 0 left → unlimited", "uses 0 left → 5 left"])
            await service.close(timeout: .seconds(10))
            service = try await open()
            #expect(try await service.getKey(id: issued.key.id).usage == nil)
            // Limited again after being unlimited: the count starts from the new grant.
            _ = try await service.updateKey(id: issued.key.id, remainingUses: 1, actor: "ops")
            #expect(try service.check(secret: issued.secret, permissions: []).isAllowed)
            #expect(try service.check(secret: issued.secret, permissions: []).denial == .usageExceeded)
            await service.close(timeout: .seconds(10))
        }
    }

    /// Making unlimited credits unlimited is no change: nothing recorded, as for any field set to
    /// what it is (a console sending every field of a form recorded "uses unlimited → unlimited").
    @Test(arguments: StoreKind.available)
    func unlimitedCreditsMadeUnlimitedRecordNothing(_ store: StoreKind) async throws {
        try await withService(store, clock: clock) { service, _ in
            let issued = try await service.createKey(name: "open", permissions: ["jobs:read"], actor: "ops")
            _ = try await service.updateKey(id: issued.key.id, remainingUses: -1, actor: "ops")
            let events = try await service.listAuditEvents(AuditQuery(keyID: issued.key.id)).events
            #expect(events.map(\.action) == [.keyCreated], "\(events.map(\.detail))")
            // A real change still is one.
            _ = try await service.updateKey(id: issued.key.id, remainingUses: 5, actor: "ops")
            let after = try await service.listAuditEvents(AuditQuery(keyID: issued.key.id)).events
            #expect(after.first?.detail == "uses unlimited → 5 left", "\(after.map(\.detail))")
        }
    }

    /// What the key shows left counts this server's checks at once, before the audit writer
    /// stores them (they are spent already); a refill counts them too.
    @Test(arguments: StoreKind.available)
    func theCreditsShownCountChecksStillInTheAuditQueue(_ store: StoreKind) async throws {
        let valve = AuditSinkValve()
        try await withReopenableStore(store, clock: clock, valve: valve) { open in
            let service = try await open()
            let issued = try await service.createKey(name: "metered", permissions: ["jobs:read"], uses: 5, actor: "ops")
            valve.hold()
            for _ in 0..<2 { #expect(try service.check(secret: issued.secret, permissions: []).isAllowed) }
            #expect(try await service.getKey(id: issued.key.id).usage?.remaining == 3)
            #expect(try await service.listKeys().keys.first { $0.id == issued.key.id }?.usage?.remaining == 3)
            // Ten from now: the two queued checks are taken from them.
            let refilled = try await service.updateKey(id: issued.key.id, remainingUses: 10, actor: "ops")
            #expect(refilled.usage?.remaining == 8)
            #expect(try await service.setEnabled(id: issued.key.id, enabled: false, actor: "ops").usage?.remaining == 8)
            valve.release()
            await service.flushAuditTrail()
            #expect(try await service.getKey(id: issued.key.id).usage == UsageGrant(granted: 10, spent: 2))
            await service.close(timeout: .seconds(10))
        }
    }

    /// Two replicas share one grant through the database: each spends from its own count at once,
    /// and learns what the other stored with its next audit batch, so together they allow at most
    /// the grant plus one batch each. A refill on one reaches the other.
    @Test(.enabled(if: TestDatabase.url != nil))
    func replicasShareTheGrantThroughTheDatabase() async throws {
        let url = try await TestDatabase.createDatabase()
        let a = try await TestDatabase.openService(clock: clock, url: url)
        let b = try await TestDatabase.openService(clock: clock, url: url)
        let issued = try await a.createKey(name: "shared", permissions: ["jobs:read"], uses: 10, actor: "ops")
        try await eventually { try b.check(secret: issued.secret, permissions: ["vault:read"]).key != nil }
        for _ in 0..<8 { #expect(try a.check(secret: issued.secret, permissions: []).isAllowed) }
        await a.flushAuditTrail()
        // B had not heard of A's checks: its first check is allowed, and its batch brings them back.
        #expect(try b.check(secret: issued.secret, permissions: []).isAllowed)
        await b.flushAuditTrail()
        #expect(try b.check(secret: issued.secret, permissions: []).isAllowed)
        #expect(try b.check(secret: issued.secret, permissions: []).denial == .usageExceeded)
        await b.flushAuditTrail()
        #expect(try await a.getKey(id: issued.key.id).usage == UsageGrant(granted: 10, spent: 10))

        _ = try await a.updateKey(id: issued.key.id, remainingUses: 2, actor: "ops")
        try await eventually { try b.check(secret: issued.secret, permissions: []).isAllowed }
        await a.close(timeout: .seconds(10))
        await b.close(timeout: .seconds(10))
    }
}
