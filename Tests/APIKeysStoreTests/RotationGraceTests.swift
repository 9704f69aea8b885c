import APIKeysCore
import APIKeysTestSupport
import Foundation
import Testing
@testable import APIKeysSQLite
@testable import APIKeysStore

/// Rotation with a grace period (issue 14, item 1) on both stores, the grace ended by the
/// injected clock.
@Suite struct RotationGraceTests {
    let clock = ManualWallClock(nowMS: 1_700_000_000_000)
    static let hour: Int64 = 3_600_000
    /// These tests move the clock on by hours: a replica's staleness bound that outlasts them.
    static let bound: Int64 = 30 * 86_400_000

    @Test(arguments: StoreKind.available)
    func theOldSecretWorksUntilTheGraceEndsAndItsChecksSaySo(_ store: StoreKind) async throws {
        try await withService(store, clock: clock, maxStalenessMS: Self.bound) { service, _ in
            let issued = try await service.createKey(name: "ci", permissions: ["jobs:read"], actor: "ops")
            let rotated = try await service.rotateKey(id: issued.key.id, graceSeconds: 3600, actor: "ops")
            let graceEnd = clock.nowMS() + Self.hour
            #expect(rotated.key.graceEndsAtMS == graceEnd)
            #expect(service.index.count == 1)  // one key, with two secrets
            #expect(try await service.getKey(id: issued.key.id).graceEndsAtMS == graceEnd)

            let old = try service.check(secret: issued.secret, permissions: ["jobs:read"])
            #expect(old.isAllowed)
            #expect(old.key?.id == issued.key.id)
            #expect(old.key?.isGraceSecret == true)
            let new = try service.check(secret: rotated.secret, permissions: ["jobs:read"])
            #expect(new.isAllowed)
            #expect(new.key?.isGraceSecret == false)

            // A change of the key applies to both secrets.
            _ = try await service.updateKey(id: issued.key.id, permissions: ["jobs:read", "jobs:write"], actor: "ops")
            #expect(try service.check(secret: issued.secret, permissions: ["jobs:write"]).isAllowed)

            clock.advance(byMS: Self.hour - 1)
            #expect(try service.check(secret: issued.secret, permissions: ["jobs:read"]).isAllowed)
            clock.advance(byMS: 1)
            // Over: refused exactly as a secret rotated without grace is.
            let late = try service.check(secret: issued.secret, permissions: ["jobs:read"])
            #expect(late.denial == .unknownKey)
            #expect(late.key == nil)
            #expect(try service.check(secret: rotated.secret, permissions: ["jobs:write"]).isAllowed)

            await service.flushAuditTrail()
            let events = try await service.listAuditEvents(AuditQuery(keyID: issued.key.id)).events
            let checks = events.filter { $0.action == .apiRequest }
            #expect(checks.count == 5)
            // Newest first: the new secret's two checks carry no detail, the old one's three do.
            #expect(checks.map { $0.detail == KeyService.graceSecretDetail } == [false, true, true, false, true])
            let rotation = try #require(events.first { $0.action == .keyRotated })
            #expect(rotation.detail.contains("accepted until"))
            // The refused late check names no key, as for an unknown secret.
            let unknown = try await service.listAuditEvents(AuditQuery(action: .apiRequest)).events
                .filter { $0.keyID.isEmpty }
            #expect(unknown.count == 1)
            #expect(unknown.first?.denial == .unknownKey)
        }
    }

    @Test(arguments: StoreKind.available)
    func disablingDeletingAndRotatingAgainEndTheGraceAtOnce(_ store: StoreKind) async throws {
        try await withService(store, clock: clock, maxStalenessMS: Self.bound) { service, _ in
            // Disabled: the grace is gone for good, even once the key is enabled again.
            let a = try await service.createKey(name: "a", permissions: ["jobs:read"], actor: "ops")
            let aNew = try await service.rotateKey(id: a.key.id, graceSeconds: 600, actor: "ops")
            #expect(try service.check(secret: a.secret, permissions: []).isAllowed)
            #expect(try await service.setEnabled(id: a.key.id, enabled: false, actor: "ops").graceEndsAtMS == nil)
            #expect(try service.check(secret: a.secret, permissions: []).denial == .unknownKey)
            _ = try await service.setEnabled(id: a.key.id, enabled: true, actor: "ops")
            #expect(try service.check(secret: a.secret, permissions: []).denial == .unknownKey)
            #expect(try service.check(secret: aNew.secret, permissions: []).isAllowed)

            // Deleted: both secrets.
            let b = try await service.createKey(name: "b", permissions: ["jobs:read"], actor: "ops")
            let bNew = try await service.rotateKey(id: b.key.id, graceSeconds: 600, actor: "ops")
            try await service.deleteKey(id: b.key.id, actor: "ops")
            #expect(try service.check(secret: b.secret, permissions: []).denial == .unknownKey)
            #expect(try service.check(secret: bNew.secret, permissions: []).denial == .unknownKey)

            // Rotated again: only the secret just replaced has a grace; the one before is dead.
            let c = try await service.createKey(name: "c", permissions: ["jobs:read"], actor: "ops")
            let c2 = try await service.rotateKey(id: c.key.id, graceSeconds: 600, actor: "ops")
            let c3 = try await service.rotateKey(id: c.key.id, graceSeconds: 600, actor: "ops")
            #expect(try service.check(secret: c.secret, permissions: []).denial == .unknownKey)
            #expect(try service.check(secret: c2.secret, permissions: []).isAllowed)
            #expect(try service.check(secret: c3.secret, permissions: []).isAllowed)
            let c4 = try await service.rotateKey(id: c.key.id, actor: "ops")
            #expect(c4.key.graceEndsAtMS == nil)
            #expect(try service.check(secret: c2.secret, permissions: []).denial == .unknownKey)
            #expect(try service.check(secret: c3.secret, permissions: []).denial == .unknownKey)

            // A disabled key is rotated without grace.
            let d = try await service.createKey(name: "d", permissions: ["jobs:read"], actor: "ops")
            _ = try await service.setEnabled(id: d.key.id, enabled: false, actor: "ops")
            #expect(try await service.rotateKey(id: d.key.id, graceSeconds: 600, actor: "ops").key.graceEndsAtMS == nil)
            _ = try await service.setEnabled(id: d.key.id, enabled: true, actor: "ops")
            #expect(try service.check(secret: d.secret, permissions: []).denial == .unknownKey)

            // Longer than 7 days: refused, and nothing changed.
            let e = try await service.createKey(name: "e", permissions: ["jobs:read"], actor: "ops")
            await #expect(throws: KeyError.invalidGrace(seconds: 7 * 86400 + 1)) {
                try await service.rotateKey(id: e.key.id, graceSeconds: 7 * 86400 + 1, actor: "ops")
            }
            #expect(try await service.getKey(id: e.key.id) == e.key)
            #expect(
                try await service.rotateKey(id: e.key.id, graceSeconds: 7 * 86400, actor: "ops").key.graceEndsAtMS
                    == clock.nowMS() + 7 * 86_400_000)

            // A leak report of the grace secret disables the key, and its grace with it.
            let f = try await service.createKey(name: "f", permissions: ["jobs:read"], actor: "ops")
            let fNew = try await service.rotateKey(id: f.key.id, graceSeconds: 600, actor: "ops")
            let report = try await service.reportLeakedKey(
                secret: f.secret, source: "paste", reporterAddress: "10.0.0.9")
            #expect(report == .disabled(keyID: f.key.id))
            #expect(try service.check(secret: fNew.secret, permissions: []).denial == .disabled)
            #expect(try service.check(secret: f.secret, permissions: []).denial == .unknownKey)
            #expect(try await service.getKey(id: f.key.id).graceEndsAtMS == nil)
        }
    }

    /// A grace outlives a restart of the server (SQLite: the file reopened; PostgreSQL: a second
    /// replica loading the keys, and catching up with a rotation made on the first).
    @Test(arguments: StoreKind.available)
    func theGraceOutlivesARestartAndReachesOtherReplicas(_ store: StoreKind) async throws {
        try await withReopenableStore(store, clock: clock, maxStalenessMS: Self.bound) { open in
            let first = try await open()
            let loaded = try await first.createKey(name: "loaded", permissions: ["jobs:read"], actor: "ops")
            let loadedNew = try await first.rotateKey(id: loaded.key.id, graceSeconds: 3600, actor: "ops")
            // SQLite has one server at a time: the first is stopped; PostgreSQL's keeps running.
            if store == .sqlite { await first.close(timeout: .seconds(10)) }
            let other = try await open()
            #expect(try other.check(secret: loaded.secret, permissions: ["jobs:read"]).key?.isGraceSecret == true)
            #expect(try other.check(secret: loadedNew.secret, permissions: ["jobs:read"]).isAllowed)
            #expect(try await other.getKey(id: loaded.key.id).graceEndsAtMS == clock.nowMS() + Self.hour)
            if store == .postgres {
                // Rotated with grace on the first, then disabled there: the other follows both.
                let fed = try await first.createKey(name: "fed", permissions: ["jobs:read"], actor: "ops")
                _ = try await first.rotateKey(id: fed.key.id, graceSeconds: 3600, actor: "ops")
                try await eventually { try other.check(secret: fed.secret, permissions: []).key?.isGraceSecret == true }
                _ = try await first.setEnabled(id: fed.key.id, enabled: false, actor: "ops")
                try await eventually { try other.check(secret: fed.secret, permissions: []).denial == .unknownKey }
                await first.close(timeout: .seconds(10))
            }
            clock.advance(byMS: Self.hour)
            #expect(try other.check(secret: loaded.secret, permissions: []).denial == .unknownKey)
            await other.close(timeout: .seconds(10))
        }
    }
}
