import APIKeysCore
import APIKeysTestSupport
import Dispatch
import Foundation
import Synchronization
import Testing
@testable import APIKeysSQLite
@testable import APIKeysStore

@Suite struct KeyServiceTests {
    let clock = ManualWallClock(nowMS: 1_700_000_000_000)

    @Test(arguments: StoreKind.available)
    func createThenGetAndCheck(_ store: StoreKind) async throws {
        try await withService(store, clock: clock) { service, _ in
            let issued = try await service.createKey(
                name: " ci ", permissions: ["jobs:write", "jobs:read"], expiresAtMS: clock.nowMS() + 60_000,
                actor: "ops")
            #expect(issued.secret.hasPrefix("dbm_"))
            #expect(issued.key.name == "ci")
            #expect(issued.key.permissions == ["jobs:read", "jobs:write"])
            #expect(issued.key.hint == String(issued.secret.prefix(8)) + "…")
            #expect(try await service.getKey(id: issued.key.id) == issued.key)
            #expect(try service.check(secret: issued.secret, permissions: ["jobs:read"]).isAllowed)
            #expect(try service.check(secret: issued.secret, permissions: ["vault:read"]).denial == .missingPermission)
        }
    }

    @Test(arguments: StoreKind.available)
    func invalidInputIsRefusedWithAPreciseError(_ store: StoreKind) async throws {
        try await withService(store, clock: clock) { service, _ in
            await #expect(throws: KeyError.invalidName("must not be empty")) {
                try await service.createKey(name: " ", permissions: ["jobs:read"], actor: "ops")
            }
            await #expect(throws: KeyError.noPermissions) {
                try await service.createKey(name: "a", permissions: [], actor: "ops")
            }
            await #expect(throws: KeyError.unknownPermission("root")) {
                try await service.createKey(name: "a", permissions: ["root"], actor: "ops")
            }
            await #expect(throws: KeyError.expiryNotInFuture(expiresAtMS: 5, nowMS: clock.nowMS())) {
                try await service.createKey(name: "a", permissions: ["jobs:read"], expiresAtMS: 5, actor: "ops")
            }
            await #expect(throws: KeyError.keyNotFound(id: "key_nope")) { try await service.getKey(id: "key_nope") }
            await #expect(throws: KeyError.invalidPageToken("x")) { try await service.listKeys(pageToken: "x") }
            let noKeys = try await service.listKeys().keys
            #expect(noKeys.isEmpty)
        }
    }

    @Test(arguments: StoreKind.available)
    func listPagesOldestFirstWithAStableCursor(_ store: StoreKind) async throws {
        try await withService(store, clock: clock) { service, _ in
            var ids: [String] = []
            for index in 0..<7 {
                ids.append(
                    try await service.createKey(name: "key \(index)", permissions: ["jobs:read"], actor: "ops").key.id)
            }
            var seen: [String] = []
            var token: String?
            repeat {
                let page = try await service.listKeys(pageSize: 3, pageToken: token)
                #expect(page.keys.count <= 3)
                seen += page.keys.map(\.id)
                token = page.nextPageToken
                if seen.count == 3 { try await service.deleteKey(id: ids[0], actor: "ops") }  // a delete does not shift pages
            } while token != nil
            #expect(seen == ids)
        }
    }

    @Test(arguments: StoreKind.available)
    func updateChangesOnlyWhatIsGivenAndAuditsEachKind(_ store: StoreKind) async throws {
        try await withService(store, clock: clock) { service, _ in
            let issued = try await service.createKey(name: "ci", permissions: ["jobs:read"], actor: "ops")
            clock.advance(byMS: 10)
            let expiry = clock.nowMS() + 1000
            let renamed = try await service.updateKey(
                id: issued.key.id, name: "ci-2", expiresAtMS: expiry, actor: "alice")
            #expect(renamed.name == "ci-2")
            #expect(renamed.expiresAtMS == expiry)
            #expect(renamed.permissions == ["jobs:read"])
            #expect(renamed.updatedAtMS == clock.nowMS())

            let regranted = try await service.updateKey(
                id: issued.key.id, expiresAtMS: 0, permissions: ["vault:read"], actor: "bob")
            #expect(regranted.expiresAtMS == nil)
            #expect(regranted.permissions == ["vault:read"])
            #expect(regranted.name == "ci-2")
            #expect(try service.check(secret: issued.secret, permissions: ["jobs:read"]).denial == .missingPermission)
            #expect(try service.check(secret: issued.secret, permissions: ["vault:read"]).isAllowed)

            // No change, no event.
            _ = try await service.updateKey(id: issued.key.id, name: "ci-2", actor: "bob")
            await #expect(throws: KeyError.noPermissions) {
                try await service.updateKey(id: issued.key.id, permissions: [], actor: "bob")
            }

            // The two checks' api.request events may or may not be written yet: the admin ones are.
            let events = try await service.listAuditEvents(AuditQuery(keyID: issued.key.id)).events
                .filter { $0.action != .apiRequest }
            #expect(events.map(\.action) == [.keyPermissionsChanged, .keyUpdated, .keyUpdated, .keyCreated])
            #expect(events.map(\.actor) == ["bob", "bob", "alice", "ops"])
            #expect(events[0].permissions == ["vault:read"])
            #expect(events.allSatisfy { $0.trigger == .admin })
            #expect(events.map(\.seq) == events.map(\.seq).sorted(by: >))
        }
    }

    /// A rename to the same text in other bytes (é composed, then decomposed) is a rename: Swift's
    /// `==` on strings is canonical equivalence, and would call it no change while answering with
    /// the old bytes. What the caller sent is what is stored, checked against and audited.
    @Test(arguments: StoreKind.available)
    func aRenameKeepsTheBytesItWasGiven(_ store: StoreKind) async throws {
        try await withService(store, clock: clock) { service, _ in
            let composed = "caf\u{E9}"
            let decomposed = "cafe\u{301}"
            let issued = try await service.createKey(name: composed, permissions: ["jobs:read"], actor: "ops")
            let renamed = try await service.updateKey(id: issued.key.id, name: decomposed, actor: "ops")
            #expect(Array(renamed.name.utf8) == Array(decomposed.utf8))
            #expect(Array(try await service.getKey(id: issued.key.id).name.utf8) == Array(decomposed.utf8))
            let checked = try service.check(secret: issued.secret, permissions: ["jobs:read"])
            #expect(checked.key.map { Array($0.name.utf8) } == Array(decomposed.utf8))
            let updates = try await service.listAuditEvents(AuditQuery(keyID: issued.key.id)).events
                .filter { $0.action == .keyUpdated }
            #expect(updates.count == 1)
        }
    }

    @Test(arguments: StoreKind.available)
    func enableDisableRotateDelete(_ store: StoreKind) async throws {
        try await withService(store, clock: clock) { service, _ in
            let issued = try await service.createKey(name: "svc", permissions: ["jobs:read"], actor: "ops")
            let id = issued.key.id
            #expect(try await service.setEnabled(id: id, enabled: false, actor: "ops").enabled == false)
            #expect(try service.check(secret: issued.secret, permissions: []).denial == .disabled)
            #expect(try await service.setEnabled(id: id, enabled: true, actor: "ops").enabled)
            #expect(try service.check(secret: issued.secret, permissions: []).isAllowed)

            clock.advance(byMS: 5)
            let rotated = try await service.rotateKey(id: id, actor: "ops")
            #expect(rotated.key.id == id)
            #expect(rotated.key.name == "svc")
            #expect(rotated.key.permissions == ["jobs:read"])
            #expect(rotated.key.rotatedAtMS == clock.nowMS())
            #expect(rotated.secret != issued.secret)
            #expect(try service.check(secret: issued.secret, permissions: []).denial == .unknownKey)
            #expect(try service.check(secret: rotated.secret, permissions: ["jobs:read"]).isAllowed)

            try await service.deleteKey(id: id, actor: "ops")
            #expect(try service.check(secret: rotated.secret, permissions: []).denial == .unknownKey)
            await #expect(throws: KeyError.keyNotFound(id: id)) { try await service.getKey(id: id) }
            await #expect(throws: KeyError.keyNotFound(id: id)) { try await service.deleteKey(id: id, actor: "ops") }

            await service.flushAuditTrail()
            let admin = try await service.listAuditEvents(AuditQuery(keyID: id)).events.filter { $0.trigger == .admin }
            #expect(admin.map(\.action) == [.keyDeleted, .keyRotated, .keyEnabled, .keyDisabled, .keyCreated])
        }
    }

    @Test func everythingSurvivesAReopen() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/apikeys.sqlite"
            var service = try KeyService.open(path: path, clock: clock)
            let kept = try await service.createKey(name: "kept", permissions: ["jobs:read"], actor: "ops")
            let rotated = try await service.createKey(name: "rotated", permissions: ["vault:read"], actor: "ops")
            let newSecret = try await service.rotateKey(id: rotated.key.id, actor: "ops").secret
            let disabled = try await service.createKey(name: "disabled", permissions: ["jobs:read"], actor: "ops")
            _ = try await service.setEnabled(id: disabled.key.id, enabled: false, actor: "ops")
            _ = try service.check(secret: kept.secret, permissions: ["jobs:read"])
            let keysBefore = try await service.listKeys().keys
            service.close()
            await #expect(throws: StoreError.closed) { try await service.getKey(id: kept.key.id) }
            #expect(throws: StoreError.closed) { try service.check(secret: kept.secret, permissions: []) }

            service = try KeyService.open(path: path, clock: clock)
            defer { service.close() }
            let keysAfter = try await service.listKeys().keys
            #expect(keysAfter.map(\.id) == keysBefore.map(\.id))
            #expect(keysAfter.first { $0.id == kept.key.id }?.lastUsedAtMS == clock.nowMS())
            #expect(try service.check(secret: kept.secret, permissions: ["jobs:read"]).isAllowed)
            #expect(try service.check(secret: rotated.secret, permissions: []).denial == .unknownKey)
            #expect(try service.check(secret: newSecret, permissions: ["vault:read"]).isAllowed)
            #expect(try service.check(secret: disabled.secret, permissions: []).denial == .disabled)
            // Sequence numbers continue after a reopen.
            let event = try await service.listAuditEvents(AuditQuery()).events
            #expect(Set(event.map(\.seq)).count == event.count)
        }
    }

    @Test func adminTokensAreHashedAndRevocable() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/apikeys.sqlite"
            var service = try KeyService.open(path: path, clock: clock)
            let token = try await service.createAdminToken(name: "bootstrap", actor: "ops")
            #expect(token.hasPrefix("adm_"))
            #expect(try await service.adminTokenName(for: token) == "bootstrap")
            #expect(try await service.adminTokenName(for: service.format.generate()) == nil)
            service.close()
            service = try KeyService.open(path: path, clock: clock)
            defer { service.close() }
            #expect(try await service.adminTokenName(for: token) == "bootstrap")
            #expect(try await service.revokeAdminToken(name: "bootstrap", actor: "sec"))
            #expect(try await service.adminTokenName(for: token) == nil)
            #expect(try await service.revokeAdminToken(name: "bootstrap", actor: "sec") == false)

            // Both changes are in the audit trail (numbered by the lookups above), with who made
            // them; the failed revoke is not.
            let events = try await service.listAuditEvents(AuditQuery()).events
            #expect(events.map(\.action) == [.adminTokenRevoked, .adminTokenCreated])
            #expect(events.map(\.actor) == ["sec", "ops"])
            #expect(events.allSatisfy { $0.detail.contains("\"bootstrap\"") && $0.keyID.isEmpty })
            #expect(try await service.listAuditEvents(AuditQuery(action: .adminTokenCreated)).events.count == 1)
        }
    }

    /// A token is seen valid (``KeyService/knownAdminTokenHash(_:)``, which the admin API's rate
    /// trusts) once a call presenting it is answered, and no longer once a call finds it revoked
    /// or expired; a made-up or malformed one never is.
    @Test func adminTokensSeenValidAreForgottenOnceFoundRevokedOrExpired() async throws {
        let clock = ManualWallClock(nowMS: 1_700_000_000_000)
        try await withTemporaryDirectory { dir in
            let service = try KeyService.open(path: dir + "/apikeys.sqlite", clock: clock)
            defer { service.close() }
            let revoked = try await service.createAdminToken(name: "revoked", actor: "ops")
            let expiring = try await service.createAdminToken(
                name: "expiring", grant: AdminGrant(scope: .read, expiresAtMS: clock.nowMS() + 60_000), actor: "ops")
            #expect(service.knownAdminTokenHash(revoked) == nil && service.knownAdminTokenHash(expiring) == nil)
            #expect(try await service.adminTokenName(for: revoked) == "revoked")
            #expect(try await service.adminTokenName(for: expiring) == "expiring")
            #expect(service.knownAdminTokenHash(revoked) != nil && service.knownAdminTokenHash(expiring) != nil)

            #expect(try await service.revokeAdminToken(name: "revoked", actor: "ops"))
            #expect(try await service.adminTokenName(for: revoked) == nil)
            #expect(service.knownAdminTokenHash(revoked) == nil)
            clock.advance(byMS: 60_000)
            #expect(try await service.authenticate(adminToken: expiring, recheckedAtCommit: true) == nil)
            #expect(service.knownAdminTokenHash(expiring) == nil)

            #expect(service.knownAdminTokenHash(KeyService.adminTokenFormat.generate()) == nil)
            #expect(service.knownAdminTokenHash("adm_nope") == nil)
        }
    }

    /// A server takes every live admin token as seen valid before it serves
    /// (``KeyService/prepareToServe()``), so an operator's first call after a restart is not
    /// taken for a stranger's; a revoked or expired token is not.
    @Test(arguments: StoreKind.available)
    func liveAdminTokensAreSeenValidBeforeServing(_ kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMS: 1_700_000_000_000)
        try await withService(kind, clock: clock) { service, _ in
            let live = try await service.createAdminToken(name: "live", actor: "ops")
            let revoked = try await service.createAdminToken(name: "revoked", actor: "ops")
            let expired = try await service.createAdminToken(
                name: "expired", grant: AdminGrant(scope: .read, expiresAtMS: clock.nowMS() + 60_000), actor: "ops")
            #expect(try await service.revokeAdminToken(name: "revoked", actor: "ops"))
            clock.advance(byMS: 60_000)
            #expect(![live, revoked, expired].contains(where: { service.knownAdminTokenHash($0) != nil }))

            try await service.prepareToServe()
            #expect(service.knownAdminTokenHash(live) != nil)
            #expect(service.knownAdminTokenHash(revoked) == nil && service.knownAdminTokenHash(expired) == nil)
            #expect(try await service.authenticate(adminToken: live, recheckedAtCommit: true)?.name == "live")
        }
    }

    /// Anyone can send a well-formed made-up admin token, and each costs a store read: reads of
    /// at most ``KeyService/maxUnknownAdminTokenReads`` tokens wait for the store at once, a call
    /// presenting yet another is refused at once (``StoreError/Code/overloaded``) instead of
    /// queued. Calls presenting one token share its read (a client's first pipelined burst is
    /// not refused); a token seen valid is read all the same (an operator is not refused during
    /// such a flood); a malformed one is answered without waiting for the store, but for one
    /// call at a time numbering the changes made offline.
    @Test func readsOfUnknownAdminTokensAreBoundedAndOperatorsAreNotRefused() async throws {
        try await withTemporaryDirectory { dir in
            let service = try KeyService.open(path: dir + "/apikeys.sqlite", clock: clock)
            defer { service.close() }
            let operatorToken = try await service.createAdminToken(name: "ops", actor: "ops")
            #expect(try await service.adminTokenName(for: operatorToken) == "ops")  // now seen valid
            let newToken = try await service.createAdminToken(name: "new", actor: "ops")  // not yet
            let store = try #require(service.store as? SQLiteKeyStore)

            // The store's admin connection held, as by a long transaction: every read waits.
            let (holding, release) = (DispatchSemaphore(value: 0), DispatchSemaphore(value: 0))
            Thread.detachNewThread {
                try? store.withAdmin { _ in
                    holding.signal()
                    release.wait()
                }
            }
            holding.wait()

            enum Outcome: Equatable { case unknown, known(String), refused, other(String) }
            let bound = KeyService.maxUnknownAdminTokenReads
            let extra = 8
            final class Tally: Sendable {
                let refusals = Atomic<Int>(0)
                let answered = Atomic<Int>(0)
            }
            let tally = Tally()
            func waitFor(_ done: () -> Bool) async {
                for _ in 0..<500 where !done() { try? await Task.sleep(for: .milliseconds(10)) }
            }
            var answeredWhileHeld = 0
            let outcomes = await withTaskGroup(of: Outcome.self) { group in
                func read(_ token: String) {
                    group.addTask {
                        defer { tally.answered.add(1, ordering: .relaxed) }
                        do {
                            return try await service.adminTokenName(for: token).map(Outcome.known) ?? .unknown
                        } catch let error as StoreError where error.code == .overloaded {
                            tally.refusals.add(1, ordering: .relaxed)
                            return .refused
                        } catch {
                            return .other("\(error)")
                        }
                    }
                }
                // A first burst of one token: one read, whatever the burst's size.
                for _ in 0..<(bound + extra) { read(newToken) }
                await waitFor { service.unknownAdminTokenReads.withLock { $0.count } == 1 }
                // Made-up tokens: as many more as there is room for, then refused at once.
                for _ in 0..<(bound - 1 + extra) { read(KeyService.adminTokenFormat.generate()) }
                await waitFor { tally.refusals.load(ordering: .relaxed) >= extra }
                // Two malformed: one answered at once, the other numbering offline changes.
                read("Bearer nope")
                read("Bearer nope")
                await waitFor { tally.answered.load(ordering: .relaxed) >= extra + 1 }
                // Nothing else is answered while the store is held.
                try? await Task.sleep(for: .milliseconds(50))
                read(operatorToken)
                try? await Task.sleep(for: .milliseconds(50))
                answeredWhileHeld = tally.answered.load(ordering: .relaxed)
                release.signal()
                return await group.reduce(into: []) { $0.append($1) }
            }
            // While held: the refused and one malformed, nothing else.
            #expect(answeredWhileHeld == extra + 1)
            #expect(outcomes.filter { $0 == .refused }.count == extra)
            #expect(service.refusedAdminTokenReads == extra)
            #expect(outcomes.filter { $0 == .known("new") }.count == bound + extra)
            #expect(outcomes.filter { $0 == .known("ops") }.count == 1)
            #expect(outcomes.filter { $0 == .unknown }.count == (bound - 1) + 2)  // made-up, malformed
            #expect(outcomes.count == (bound + extra) + (bound - 1 + extra) + 2 + 1)
            // Nothing is left counted: made-up tokens are read again once the flood has passed.
            #expect(service.unknownAdminTokenReads.withLock { $0.count } == 0)
            for _ in 0..<(bound + extra) {
                #expect(try await service.adminTokenName(for: KeyService.adminTokenFormat.generate()) == nil)
            }
        }
    }

    /// An admin token that expires between authenticating a change and its commit commits
    /// nothing: the expiry is checked again inside the transaction.
    @Test(arguments: StoreKind.available)
    func aChangeMadeWithAnAdminTokenThatExpiredMeanwhileIsRefused(_ kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMS: 1_700_000_000_000)
        try await withService(kind, clock: clock) { service, _ in
            let token = KeyService.adminTokenFormat.generate()
            try await service.createAdminToken(
                name: "expiring", token: token, grant: AdminGrant(scope: .keys, expiresAtMS: clock.nowMS() + 60_000),
                actor: "ops")
            let actor = try #require(try await service.authenticate(adminToken: token, recheckedAtCommit: true))
            let key = try await service.createKey(name: "k", permissions: ["jobs:read"], actor: actor)
            clock.advance(byMS: 61_000)
            await #expect(throws: KeyError.adminTokenNotValid) {
                try await service.setEnabled(id: key.key.id, enabled: false, actor: actor)
            }
            await #expect(throws: KeyError.adminTokenNotValid) {
                try await service.createKey(name: "late", permissions: ["jobs:read"], actor: actor)
            }
            #expect(try await service.getKey(id: key.key.id).enabled)
            #expect(try await service.authenticate(adminToken: token, recheckedAtCommit: true) == nil)
        }
    }

    /// A change made with an admin token commits only while the token is valid. A change is
    /// authenticated from memory (the store checks the token again when it commits), so once the
    /// token is revoked its changes are refused there and write nothing, while changes made with
    /// another token at the same moment (on PostgreSQL, in the same group commit) go through.
    @Test(arguments: StoreKind.available)
    func aChangeMadeWithARevokedAdminTokenIsRefusedAtItsCommit(_ kind: StoreKind) async throws {
        try await withService(kind) { service, _ in
            let keptToken = try await service.createAdminToken(name: "kept", actor: "ops")
            let goneToken = try await service.createAdminToken(name: "gone", actor: "ops")
            let kept = try #require(try await service.authenticate(adminToken: keptToken, recheckedAtCommit: true))
            let gone = try #require(try await service.authenticate(adminToken: goneToken, recheckedAtCommit: true))
            #expect(gone.name == "gone" && gone.token == SecretHash(of: goneToken))
            let key = try await service.createKey(name: "made-by-gone", permissions: ["jobs:read"], actor: gone)
            #expect(try await service.revokeAdminToken(name: "gone", actor: "sec"))

            // A change is authenticated from memory, and refused at its commit.
            #expect(try await service.authenticate(adminToken: goneToken, recheckedAtCommit: true) == gone)
            await #expect(throws: KeyError.adminTokenNotValid) {
                try await service.setEnabled(id: key.key.id, enabled: false, actor: gone)
            }
            // Refused once, the token is forgotten: the next change's lookup reads the store.
            #expect(try await service.authenticate(adminToken: goneToken, recheckedAtCommit: true) == nil)
            // A read is authenticated by the store: refused at once.
            #expect(try await service.authenticate(adminToken: goneToken, recheckedAtCommit: false) == nil)

            // Racing changes with both tokens: each of the revoked token's is refused, each of the
            // other's commits.
            let outcomes = try await withThrowingTaskGroup(of: (String, Bool).self) { group in
                func attempt(_ actor: AdminActor, _ change: @escaping @Sendable () async throws -> Void) {
                    group.addTask {
                        do {
                            try await change()
                            return (actor.name, true)
                        } catch let error as KeyError where error.code == .adminTokenNotValid {
                            return (actor.name, false)
                        }
                    }
                }
                for index in 0..<16 {
                    let actor = index % 2 == 0 ? kept : gone
                    attempt(actor) {
                        _ = try await service.createKey(name: "k\(index)", permissions: ["jobs:read"], actor: actor)
                    }
                    if index == 8 { attempt(gone) { try await service.deleteKey(id: key.key.id, actor: gone) } }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(outcomes.filter { $0.0 == "kept" }.allSatisfy { $0.1 })
            #expect(outcomes.filter { $0.0 == "gone" }.allSatisfy { !$0.1 })

            // Nothing of the revoked token's changes was written: its key is still there and enabled,
            // and it is the actor of no event after the revocation.
            #expect(try service.check(secret: key.secret, permissions: ["jobs:read"]).isAllowed)
            let names = Set(try await service.listKeys(pageSize: 100).keys.map(\.name))
            #expect(names == Set(["made-by-gone"] + stride(from: 0, to: 16, by: 2).map { "k\($0)" }))
            let trail = try await service.listAuditEvents(AuditQuery(), pageSize: 100).events
            let revokedAt = try #require(trail.firstIndex { $0.action == .adminTokenRevoked })
            #expect(trail[..<revokedAt].allSatisfy { $0.actor != "gone" }, "events are newest first")
        }
    }

    /// ReportLeakedKey on each store: the key disabled and the report recorded in one commit;
    /// a secret that is no key's (any more) changes and records nothing.
    @Test(arguments: StoreKind.available)
    func aLeakReportDisablesTheKeyAndIsRecorded(_ kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMS: 1_700_000_000_000)
        try await withService(kind, clock: clock) { service, _ in
            let key = try await service.createKey(name: "ci", permissions: ["jobs:read"], actor: "ops")
            let old = try await service.createKey(name: "old", permissions: ["jobs:read"], actor: "ops")
            _ = try await service.rotateKey(id: old.key.id, actor: "ops")

            #expect(
                try await service.reportLeakedKey(secret: key.secret, source: "paste", reporterAddress: "192.0.2.7")
                    == .disabled(keyID: key.key.id))
            #expect(try service.check(secret: key.secret, permissions: []).denial == .disabled)
            #expect(
                try await service.reportLeakedKey(secret: "Bearer " + key.secret, source: "", reporterAddress: "::1")
                    == .alreadyDisabled(keyID: key.key.id))
            #expect(try await service.reportLeakedKey(secret: old.secret, source: "", reporterAddress: "") == .noKey)
            #expect(
                try await service.reportLeakedKey(secret: service.format.generate(), source: "", reporterAddress: "")
                    == .noKey)
            #expect(try await service.reportLeakedKey(secret: "dbm_short", source: "", reporterAddress: "") == .noKey)
            #expect(try await service.getKey(id: old.key.id).enabled)

            // Reports of the disabled key are recorded at most once a minute.
            for _ in 0..<5 {
                #expect(
                    try await service.reportLeakedKey(
                        secret: key.secret, source: "again", reporterAddress: "198.51.100.1")
                        == .alreadyDisabled(keyID: key.key.id))
            }
            clock.advance(byMS: KeyService.leakReportInterval)
            try await service.reportLeakedKey(
                secret: key.secret, source: "a minute on", reporterAddress: "198.51.100.1")

            let reports = try await service.listAuditEvents(AuditQuery(action: .keyLeakReported)).events
            #expect(reports.map(\.clientAddress) == ["198.51.100.1", "::1", "192.0.2.7"])
            #expect(reports.map(\.resource) == ["a minute on", "", "paste"])
            #expect(reports.allSatisfy { $0.keyID == key.key.id && $0.actor == KeyService.leakReportActor })
        }
    }

    /// A key's allowlist on each store: checks from outside it (or without an address) denied
    /// IP_NOT_ALLOWED (403), changed and cleared by UpdateKey at once, kept across a reopen.
    @Test(arguments: StoreKind.available)
    func anAllowlistAdmitsChecksFromItsNetworksOnly(_ kind: StoreKind) async throws {
        try await withService(kind) { service, dir in
            let fenced = try await service.createKey(
                name: "ci", permissions: ["jobs:read"], allowedNetworks: ["10.1.2.3/8", "2001:db8::/32", "10.0.0.0/8"],
                actor: "ops")
            #expect(fenced.key.allowedNetworks == ["10.0.0.0/8", "2001:db8::/32"], "normalised, each once")
            let open = try await service.createKey(name: "open", permissions: ["jobs:read"], actor: "ops")
            func denial(_ secret: String, _ address: String, _ permissions: [String] = ["jobs:read"]) throws -> Denial?
            {
                try service.check(secret: secret, permissions: permissions, clientAddress: address).denial
            }
            #expect(try denial(fenced.secret, "10.9.8.7") == nil)
            #expect(try denial(fenced.secret, "::ffff:10.9.8.7") == nil)
            #expect(try denial(fenced.secret, "2001:db8::1") == nil)
            #expect(try denial(fenced.secret, "192.0.2.1") == .ipNotAllowed)
            #expect(try denial(fenced.secret, "") == .ipNotAllowed)
            #expect(Denial.ipNotAllowed.httpStatus == 403)
            #expect(try denial(fenced.secret, "192.0.2.1", ["vault:read"]) == .missingPermission, "lowest reason wins")
            #expect(try denial(open.secret, "192.0.2.1") == nil)
            await #expect(throws: KeyError.self) {
                try await service.createKey(
                    name: "bad", permissions: ["jobs:read"], allowedNetworks: ["10.0.0.0/33"], actor: "ops")
            }

            let moved = try await service.updateKey(id: fenced.key.id, allowedNetworks: ["192.0.2.0/24"], actor: "ops")
            #expect(moved.allowedNetworks == ["192.0.2.0/24"])
            #expect(try denial(fenced.secret, "192.0.2.1") == nil)
            #expect(try denial(fenced.secret, "10.9.8.7") == .ipNotAllowed)
            let events = try await service.listAuditEvents(AuditQuery(keyID: fenced.key.id, action: .keyUpdated)).events
            #expect(events.first?.detail == "allowed networks [10.0.0.0/8 2001:db8::/32] → [192.0.2.0/24]")

            if kind == .sqlite {
                let reopened = try KeyService.open(path: dir + "/apikeys.sqlite")
                defer { reopened.close() }
                #expect(
                    try reopened.check(secret: fenced.secret, permissions: [], clientAddress: "10.9.8.7").denial
                        == .ipNotAllowed)
                #expect(try await reopened.getKey(id: fenced.key.id).allowedNetworks == ["192.0.2.0/24"])
            }
            _ = try await service.updateKey(id: fenced.key.id, allowedNetworks: [], actor: "ops")
            #expect(try denial(fenced.secret, "") == nil)
        }
    }
}
