import APIKeysCore
import APIKeysTestSupport
import Testing
@testable import APIKeysSQLite
@_spi(Testing) @testable import APIKeysStore

/// The audit trail's hash chain on both stores: every event in exactly one link, the chain
/// verified page by page, pruning that moves the anchor, and tampering found.
@Suite struct AuditChainTests {
    static let day: Int64 = 86_400_000

    /// Walks the whole chain as a client would (small pages) and returns what it verified.
    static func walk(_ service: KeyService, pageSize: Int = 7) async throws -> (
        verifier: AuditChainVerifier, events: [AuditRecord], state: AuditChain.State
    ) {
        var after: UInt64 = 0
        var verifier: AuditChainVerifier?
        var events: [AuditRecord] = []
        var state: AuditChain.State
        while true {
            let page = try await service.auditChainPage(after: after, pageSize: pageSize)
            state = page.state
            if verifier == nil { verifier = AuditChainVerifier(from: state.anchor) }
            for (previous, link) in page.links {
                // Each link names the hash of the one before it; only the first of a walk from
                // the start may not (the verifier starts from the anchor), and a missing one
                // mid-walk must be a gap the verifier then finds.
                if let previous {
                    #expect(previous == verifier!.last.hash, "link \(link.position): not chained to the one before")
                } else {
                    #expect(
                        events.isEmpty || link.position != verifier!.last.position + 1,
                        "link \(link.position): no previous hash, mid-walk")
                }
                try verifier!.check(
                    position: link.position, hash: link.hash, entries: link.events.map(AuditChain.Entry.init),
                    state: state, prunedFrom: link.prunedFrom)
                events += link.events
            }
            guard let last = page.links.last else { break }
            after = last.link.position
        }
        try verifier!.finish(state: state)
        return (verifier!, events, state)
    }

    static func allEvents(_ service: KeyService) async throws -> [AuditRecord] {
        var events: [AuditRecord] = []
        var token: String?
        repeat {
            let page = try await service.listAuditEvents(AuditQuery(), pageSize: 1000, pageToken: token)
            events += page.events
            token = page.nextPageToken
        } while token != nil
        return events
    }

    @Test(arguments: StoreKind.available)
    func everyEventIsInOneLinkAndTheChainVerifies(_ kind: StoreKind) async throws {
        try await withService(kind) { service, _ in
            let key = try await service.createKey(name: "k", permissions: ["jobs:read"], actor: "ops")
            // More than a link holds, some denied, one with an odd permission list.
            for index in 0..<(AuditChain.maxEventsPerLink + 40) {
                _ = try service.check(
                    secret: key.secret, permissions: index % 3 == 0 ? ["vault:read"] : ["jobs:read"],
                    resource: "GET /\(index)")
            }
            // Lists that a space-joined form would make one are refused (the chain's digest joins).
            for ambiguous in [["a b"], ["jobs:read  jobs:execute", " vault:read"], ["", "c"]] {
                #expect(throws: KeyError.invalidPermissionName) {
                    try service.check(secret: key.secret, permissions: ambiguous, resource: "spaces")
                }
            }
            _ = try service.check(secret: key.secret, permissions: ["a", "c"], resource: "odd")
            _ = try await service.rotateKey(id: key.key.id, graceSeconds: 60, actor: "ops")
            _ = try service.check(secret: key.secret, permissions: ["jobs:read"], resource: "old secret")
            _ = try await service.setEnabled(id: key.key.id, enabled: false, actor: "ops")
            await service.flushAuditTrail()

            let walked = try await Self.walk(service)
            let listed = try await Self.allEvents(service)
            #expect(walked.events.map(\.seq).sorted() == listed.map(\.seq).sorted())
            #expect(walked.events.count == AuditChain.maxEventsPerLink + 45)
            #expect(walked.verifier.links >= 5)  // created, ≥ 2 of checks, rotated, disabled
            #expect(walked.state.anchor == .start && walked.state.head == walked.verifier.last)
        }
    }

    /// A position past what the stores can hold (found by schemathesis through the admin API:
    /// `after_position=2^63` trapped converting it for SQLite, any `read` token could stop the
    /// server) is refused as the caller's mistake, on every store.
    @Test(arguments: StoreKind.available)
    func aPositionPastTheChainIsRefused(_ kind: StoreKind) async throws {
        try await withService(kind) { service, _ in
            for position in [UInt64(Int64.max) + 1, .max] {
                await #expect(throws: KeyError.self) { try await service.auditChainPage(after: position) }
            }
            let last = try await service.auditChainPage(after: UInt64(Int64.max))
            #expect(last.links.isEmpty)
        }
    }

    @Test(arguments: StoreKind.available)
    func pruningMovesTheAnchorAndTheRestStillVerifies(_ kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMS: 1_700_000_000_000)
        try await withService(
            kind, clock: clock, maxStalenessMS: 100 * Self.day, auditRetentionMS: 30 * Self.day,
            historyRetentionMS: 30 * Self.day
        ) { service, _ in
            let key = try await service.createKey(name: "k", permissions: ["jobs:read"], actor: "ops")
            for _ in 0..<300 { _ = try service.check(secret: key.secret, permissions: ["jobs:read"]) }
            await service.flushAuditTrail()
            let before = try await Self.walk(service)

            clock.advance(byMS: 31 * Self.day)
            _ = try service.check(secret: key.secret, permissions: ["jobs:read"], resource: "recent")
            await service.flushAuditTrail()
            // Blocking, so off the pool: PostgreSQL's writer needs the pool's threads to prune.
            try await offThePool { service.pruneAuditTrailNow() }

            let after = try await Self.walk(service)
            #expect(after.state.anchor.position == before.state.head.position)
            #expect(after.state.anchor == before.state.head)
            #expect(after.verifier.start == before.state.head)
            #expect(after.events.filter { $0.action == .apiRequest }.map(\.resource) == ["recent"])
            let pruned = try #require(after.events.first { $0.action == .auditPruned })
            #expect(AuditChain.anchor(inDetail: pruned.detail) == after.state.anchor, "\(pruned.detail)")
        }
    }

    /// With history kept (the default) and checks pruned after 30 days: a key's creation and
    /// rotation outlive the checks around them, the emptied runs of links are gaps named by the
    /// audit.pruned events, and the whole chain still verifies, also after a second pruning that
    /// continues an earlier gap. A history retention, once passed, removes the rest from the front.
    @Test(arguments: StoreKind.available)
    func historyOutlivesTheRetentionOfChecksAndTheChainStillVerifies(_ kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMS: 1_700_000_000_000)
        try await withService(
            kind, clock: clock, maxStalenessMS: 400 * Self.day, auditRetentionMS: 30 * Self.day,
            historyRetentionMS: 200 * Self.day
        ) { service, _ in
            let old = try await service.createKey(name: "old", permissions: ["jobs:read"], actor: "ops")
            for _ in 0..<300 { _ = try service.check(secret: old.secret, permissions: ["jobs:read"]) }
            await service.flushAuditTrail()
            let rotated = try await service.rotateKey(id: old.key.id, actor: "ops")
            for _ in 0..<300 { _ = try service.check(secret: rotated.secret, permissions: ["jobs:read"]) }
            await service.flushAuditTrail()
            let before = try await Self.walk(service)

            clock.advance(byMS: 40 * Self.day)
            let young = try await service.createKey(name: "young", permissions: ["jobs:read"], actor: "ops")
            _ = try service.check(secret: young.secret, permissions: ["jobs:read"], resource: "recent")
            await service.flushAuditTrail()
            try await offThePool { service.pruneAuditTrailNow() }

            let history = try await service.listAuditEvents(AuditQuery(keyID: old.key.id), pageSize: 1000).events
            #expect(history.map(\.action) == [.keyRotated, .keyCreated], "\(history.map(\.action))")
            let after = try await Self.walk(service)
            #expect(after.state.anchor == before.state.anchor, "history at the front keeps the anchor")
            #expect(after.events.filter { $0.action == .apiRequest }.map(\.resource) == ["recent"])
            let pruned = try #require(after.events.first { $0.action == .auditPruned })
            let gaps = AuditChain.gaps(inDetail: pruned.detail)
            #expect(!gaps.isEmpty && pruned.detail.hasPrefix("pruned 600 events"), "\(pruned.detail)")

            // Forty days on: the young key's check goes too; its gap follows history, a new one.
            _ = try service.check(secret: young.secret, permissions: ["jobs:read"], resource: "later")
            await service.flushAuditTrail()
            clock.advance(byMS: 40 * Self.day)
            try await offThePool { service.pruneAuditTrailNow() }
            let later = try await Self.walk(service)
            #expect(later.events.filter { $0.action == .apiRequest }.isEmpty)
            #expect(later.events.filter { $0.action == .keyCreated }.map(\.keyName) == ["old", "young"])

            // Past the history's retention (200 days), everything old goes from the front.
            clock.advance(byMS: 200 * Self.day)
            _ = try service.check(secret: young.secret, permissions: ["jobs:read"], resource: "last")
            await service.flushAuditTrail()
            try await offThePool { service.pruneAuditTrailNow() }
            let last = try await Self.walk(service)
            #expect(last.state.anchor.position > later.state.anchor.position)
            #expect(!last.events.contains { $0.action == .keyCreated || $0.action == .keyRotated })
            #expect(last.events.filter { $0.action == .apiRequest }.map(\.resource) == ["last"])
        }
    }

    /// A link of history emptied by hand and made to look like a gap, with no audit.pruned event
    /// naming it, is found.
    @Test func aForgedGapIsFound() async throws {
        let clock = ManualWallClock(nowMS: 1_700_000_000_000)
        try await withService(.sqlite, clock: clock, auditRetentionMS: 30 * Self.day) { service, dir in
            let key = try await service.createKey(name: "k", permissions: ["jobs:read"], actor: "ops")
            for _ in 0..<10 { _ = try service.check(secret: key.secret, permissions: ["jobs:read"]) }
            await service.flushAuditTrail()
            _ = try await service.setEnabled(id: key.key.id, enabled: false, actor: "ops")
            clock.advance(byMS: 40 * Self.day)
            _ = try await service.setEnabled(id: key.key.id, enabled: true, actor: "ops")
            service.pruneAuditTrailNow()
            _ = try await Self.walk(service)  // holds: the checks are a named gap

            let db = try SQLiteConnection(path: dir + "/apikeys.sqlite")
            defer { db.close() }
            let disabled = try #require(
                try db.statement("SELECT link FROM audit_events WHERE action = 'key.disabled'").firstRow { $0.int64(0) }
            )
            try db.execute("DELETE FROM audit_events WHERE link = \(disabled)")
            try db.execute(
                "UPDATE audit_links SET pruned_from = position, count = 0 WHERE first_seq = \(disabled)")
            let broken = await #expect(throws: AuditChainVerifier.Break.self) { _ = try await Self.walk(service) }
            #expect(
                broken?.reason.contains("no audit.pruned event records their pruning") == true,
                "\(String(describing: broken))")
        }
    }

    /// Edits, removals and a rewound head, each made with SQL on the file, are each found.
    @Test func tamperingWithTheFileIsFound() async throws {
        let valve = AuditSinkValve()
        try await withService(.sqlite, valve: valve) { service, dir in
            let key = try await service.createKey(name: "k", permissions: ["jobs:read"], actor: "ops")
            // A first check waits in the held write; the ten after it queue, so one batch, one link.
            valve.hold()
            _ = try service.check(secret: key.secret, permissions: ["jobs:read"])
            try #require(valve.waitForAHeldWrite())
            for _ in 0..<10 { _ = try service.check(secret: key.secret, permissions: ["jobs:read"]) }
            valve.release()
            await service.flushAuditTrail()
            _ = try await service.setEnabled(id: key.key.id, enabled: false, actor: "ops")
            _ = try await service.setEnabled(id: key.key.id, enabled: true, actor: "ops")
            let clean = try await Self.walk(service)
            #expect(clean.verifier.links == 5)

            let db = try SQLiteConnection(path: dir + "/apikeys.sqlite")
            defer { db.close() }
            func expectBreak(at position: UInt64, _ reason: String) async throws {
                let broken = await #expect(throws: AuditChainVerifier.Break.self) { _ = try await Self.walk(service) }
                #expect(
                    broken?.position == position && broken?.reason.contains(reason) == true,
                    "\(String(describing: broken))")
            }
            // Links: 1 the create, 2 the first check, 3 the ten, 4 the disable, 5 the enable.
            // The batches of checks removed: link 2 no longer hashes.
            try db.execute("DELETE FROM api_request_batches")
            try await expectBreak(at: 2, "do not hash")
            // The oldest links removed with the anchor moved after them, as a prune would, but
            // with no audit.pruned event recording it.
            try db.execute(
                "UPDATE audit_chain SET anchor_position = 3, anchor_hash = (SELECT hash FROM audit_links WHERE position = 3)"
            )
            try db.execute("DELETE FROM audit_links WHERE position <= 3")
            try await expectBreak(at: 4, "no audit.pruned event records")
            // An event removed, then its whole link.
            try db.execute("DELETE FROM audit_events WHERE action = 'key.disabled'")
            try await expectBreak(at: 4, "do not hash")
            try db.execute("DELETE FROM audit_links WHERE position = 4")
            try await expectBreak(at: 5, "link 4 is missing")
            // The newest link removed and the head rewound: only a copy kept elsewhere has the
            // head it had (docs/PROTOCOL.md); removing it without rewinding is found.
            try db.execute("DELETE FROM audit_links WHERE position = 5")
            try await expectBreak(at: 4, "its head is link 5")
        }
    }
}
