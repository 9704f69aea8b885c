import APIKeysCore
import APIKeysTestSupport
import Foundation
import Testing
@testable import APIKeysSQLite
@testable import APIKeysStore

/// Per-key rate limits (issue 14, item 3) kept by both stores: set at creation, changed and
/// removed by an update, loaded at start and followed by other replicas. The buckets themselves
/// are per server and in memory (``RateLimitTests`` in APIKeysCoreTests).
@Suite struct RateLimitStoreTests {
    let clock = ManualWallClock(nowMS: 1_700_000_000_000)

    @Test(arguments: StoreKind.available)
    func aLimitIsKeptChangedAndFollowed(_ store: StoreKind) async throws {
        try await withReopenableStore(store, clock: clock) { open in
            let first = try await open()
            let limit = KeyRateLimit(requests: 2, periodSeconds: 60)
            let issued = try await first.createKey(
                name: "limited", permissions: ["jobs:read"], rateLimit: limit, actor: "ops")
            #expect(issued.key.rateLimit == limit)
            #expect(try await first.getKey(id: issued.key.id).rateLimit == limit)
            for _ in 0..<2 { #expect(try first.check(secret: issued.secret, permissions: ["jobs:read"]).isAllowed) }
            #expect(try first.check(secret: issued.secret, permissions: ["jobs:read"]).denial == .rateLimited)
            await #expect(throws: KeyError.self) {
                try await first.updateKey(
                    id: issued.key.id, rateLimit: KeyRateLimit(requests: 1, periodSeconds: 90_000), actor: "ops")
            }

            // Loaded by a server that starts on the same store: its own bucket, the same limit.
            // SQLite has one server at a time: the first is stopped; PostgreSQL's keeps running.
            if store == .sqlite { await first.close(timeout: .seconds(10)) }
            let other = try await open()
            #expect(try await other.getKey(id: issued.key.id).rateLimit == limit)
            for _ in 0..<2 { #expect(try other.check(secret: issued.secret, permissions: []).isAllowed) }
            #expect(try other.check(secret: issued.secret, permissions: []).denial == .rateLimited)

            // Changed (on the first replica, where there are two), then removed.
            let changer = store == .postgres ? first : other
            let wider = KeyRateLimit(requests: 5, periodSeconds: 60)
            let updated = try await changer.updateKey(id: issued.key.id, rateLimit: wider, actor: "ops")
            #expect(updated.rateLimit == wider)
            try await eventually { try other.check(secret: issued.secret, permissions: []).isAllowed }
            _ = try await changer.updateKey(id: issued.key.id, rateLimit: KeyRateLimit(requests: 0), actor: "ops")
            try await eventually {
                try (0..<20).allSatisfy { _ in try other.check(secret: issued.secret, permissions: []).isAllowed }
            }
            #expect(try await other.getKey(id: issued.key.id).rateLimit == nil)

            await other.flushAuditTrail()
            let updates = try await other.listAuditEvents(AuditQuery(keyID: issued.key.id, action: .keyUpdated)).events
            #expect(updates.map(\.detail) == ["rate limit 5/m → none", "rate limit 2/m → 5/m"])
            if store == .postgres { await first.close(timeout: .seconds(10)) }
            await other.close(timeout: .seconds(10))
        }
    }
}
