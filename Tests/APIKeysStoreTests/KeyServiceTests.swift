import APIKeysCore
import APIKeysTestSupport
import Foundation
import Testing
@testable import APIKeysStore

@Suite struct KeyServiceTests {
    let clock = ManualWallClock(nowMS: 1_700_000_000_000)

    @Test func createThenGetAndCheck() throws {
        try withService(clock: clock) { service, _ in
            let issued = try service.createKey(
                name: " ci ", permissions: ["jobs:write", "jobs:read"], expiresAtMS: clock.nowMS() + 60_000,
                actor: "ops")
            #expect(issued.secret.hasPrefix("dbm_"))
            #expect(issued.key.name == "ci")
            #expect(issued.key.permissions == ["jobs:read", "jobs:write"])
            #expect(issued.key.hint == String(issued.secret.prefix(8)) + "…")
            #expect(try service.getKey(id: issued.key.id) == issued.key)
            #expect(try service.check(secret: issued.secret, permissions: ["jobs:read"]).isAllowed)
            #expect(try service.check(secret: issued.secret, permissions: ["vault:read"]).denial == .missingPermission)
        }
    }

    @Test func invalidInputIsRefusedWithAPreciseError() throws {
        try withService(clock: clock) { service, _ in
            #expect(throws: KeyError.invalidName("must not be empty")) {
                try service.createKey(name: " ", permissions: ["jobs:read"], actor: "ops")
            }
            #expect(throws: KeyError.noPermissions) { try service.createKey(name: "a", permissions: [], actor: "ops") }
            #expect(throws: KeyError.unknownPermission("root")) {
                try service.createKey(name: "a", permissions: ["root"], actor: "ops")
            }
            #expect(throws: KeyError.expiryNotInFuture(expiresAtMS: 5, nowMS: clock.nowMS())) {
                try service.createKey(name: "a", permissions: ["jobs:read"], expiresAtMS: 5, actor: "ops")
            }
            #expect(throws: KeyError.keyNotFound(id: "key_nope")) { try service.getKey(id: "key_nope") }
            #expect(throws: KeyError.invalidPageToken("x")) { try service.listKeys(pageToken: "x") }
            let noKeys = try service.listKeys().keys
            #expect(noKeys.isEmpty)
        }
    }

    @Test func listPagesOldestFirstWithAStableCursor() throws {
        try withService(clock: clock) { service, _ in
            var ids: [String] = []
            for index in 0..<7 {
                ids.append(try service.createKey(name: "key \(index)", permissions: ["jobs:read"], actor: "ops").key.id)
            }
            var seen: [String] = []
            var token: String?
            repeat {
                let page = try service.listKeys(pageSize: 3, pageToken: token)
                #expect(page.keys.count <= 3)
                seen += page.keys.map(\.id)
                token = page.nextPageToken
                if seen.count == 3 { try service.deleteKey(id: ids[0], actor: "ops") }  // a delete does not shift pages
            } while token != nil
            #expect(seen == ids)
        }
    }

    @Test func updateChangesOnlyWhatIsGivenAndAuditsEachKind() throws {
        try withService(clock: clock) { service, _ in
            let issued = try service.createKey(name: "ci", permissions: ["jobs:read"], actor: "ops")
            clock.advance(byMS: 10)
            let expiry = clock.nowMS() + 1000
            let renamed = try service.updateKey(id: issued.key.id, name: "ci-2", expiresAtMS: expiry, actor: "alice")
            #expect(renamed.name == "ci-2")
            #expect(renamed.expiresAtMS == expiry)
            #expect(renamed.permissions == ["jobs:read"])
            #expect(renamed.updatedAtMS == clock.nowMS())

            let regranted = try service.updateKey(
                id: issued.key.id, expiresAtMS: 0, permissions: ["vault:read"], actor: "bob")
            #expect(regranted.expiresAtMS == nil)
            #expect(regranted.permissions == ["vault:read"])
            #expect(regranted.name == "ci-2")
            #expect(try service.check(secret: issued.secret, permissions: ["jobs:read"]).denial == .missingPermission)
            #expect(try service.check(secret: issued.secret, permissions: ["vault:read"]).isAllowed)

            // No change, no event.
            _ = try service.updateKey(id: issued.key.id, name: "ci-2", actor: "bob")
            #expect(throws: KeyError.noPermissions) {
                try service.updateKey(id: issued.key.id, permissions: [], actor: "bob")
            }

            // The two checks' api.request events may or may not be written yet: the admin ones are.
            let events = try service.listAuditEvents(AuditQuery(keyID: issued.key.id)).events
                .filter { $0.action != .apiRequest }
            #expect(events.map(\.action) == [.keyPermissionsChanged, .keyUpdated, .keyUpdated, .keyCreated])
            #expect(events.map(\.actor) == ["bob", "bob", "alice", "ops"])
            #expect(events[0].permissions == ["vault:read"])
            #expect(events.allSatisfy { $0.trigger == .admin })
            #expect(events.map(\.seq) == events.map(\.seq).sorted(by: >))
        }
    }

    @Test func enableDisableRotateDelete() throws {
        try withService(clock: clock) { service, _ in
            let issued = try service.createKey(name: "svc", permissions: ["jobs:read"], actor: "ops")
            let id = issued.key.id
            #expect(try service.setEnabled(id: id, enabled: false, actor: "ops").enabled == false)
            #expect(try service.check(secret: issued.secret, permissions: []).denial == .disabled)
            #expect(try service.setEnabled(id: id, enabled: true, actor: "ops").enabled)
            #expect(try service.check(secret: issued.secret, permissions: []).isAllowed)

            clock.advance(byMS: 5)
            let rotated = try service.rotateKey(id: id, actor: "ops")
            #expect(rotated.key.id == id)
            #expect(rotated.key.name == "svc")
            #expect(rotated.key.permissions == ["jobs:read"])
            #expect(rotated.key.rotatedAtMS == clock.nowMS())
            #expect(rotated.secret != issued.secret)
            #expect(try service.check(secret: issued.secret, permissions: []).denial == .unknownKey)
            #expect(try service.check(secret: rotated.secret, permissions: ["jobs:read"]).isAllowed)

            try service.deleteKey(id: id, actor: "ops")
            #expect(try service.check(secret: rotated.secret, permissions: []).denial == .unknownKey)
            #expect(throws: KeyError.keyNotFound(id: id)) { try service.getKey(id: id) }
            #expect(throws: KeyError.keyNotFound(id: id)) { try service.deleteKey(id: id, actor: "ops") }

            service.flushAuditTrail()
            let admin = try service.listAuditEvents(AuditQuery(keyID: id)).events.filter { $0.trigger == .admin }
            #expect(admin.map(\.action) == [.keyDeleted, .keyRotated, .keyEnabled, .keyDisabled, .keyCreated])
        }
    }

    @Test func everythingSurvivesAReopen() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/apikeys.sqlite"
            var service = try KeyService.open(path: path, clock: clock)
            let kept = try service.createKey(name: "kept", permissions: ["jobs:read"], actor: "ops")
            let rotated = try service.createKey(name: "rotated", permissions: ["vault:read"], actor: "ops")
            let newSecret = try service.rotateKey(id: rotated.key.id, actor: "ops").secret
            let disabled = try service.createKey(name: "disabled", permissions: ["jobs:read"], actor: "ops")
            _ = try service.setEnabled(id: disabled.key.id, enabled: false, actor: "ops")
            _ = try service.check(secret: kept.secret, permissions: ["jobs:read"])
            let keysBefore = try service.listKeys().keys
            service.close()
            #expect(throws: StoreError.closed) { try service.getKey(id: kept.key.id) }
            #expect(throws: StoreError.closed) { try service.check(secret: kept.secret, permissions: []) }

            service = try KeyService.open(path: path, clock: clock)
            defer { service.close() }
            let keysAfter = try service.listKeys().keys
            #expect(keysAfter.map(\.id) == keysBefore.map(\.id))
            #expect(keysAfter.first { $0.id == kept.key.id }?.lastUsedAtMS == clock.nowMS())
            #expect(try service.check(secret: kept.secret, permissions: ["jobs:read"]).isAllowed)
            #expect(try service.check(secret: rotated.secret, permissions: []).denial == .unknownKey)
            #expect(try service.check(secret: newSecret, permissions: ["vault:read"]).isAllowed)
            #expect(try service.check(secret: disabled.secret, permissions: []).denial == .disabled)
            // Sequence numbers continue after a reopen.
            let event = try service.listAuditEvents(AuditQuery()).events
            #expect(Set(event.map(\.seq)).count == event.count)
        }
    }

    @Test func adminTokensAreHashedAndRevocable() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/apikeys.sqlite"
            var service = try KeyService.open(path: path, clock: clock)
            let token = try service.createAdminToken(name: "bootstrap", actor: "ops")
            #expect(token.hasPrefix("adm_"))
            #expect(try service.adminTokenName(for: token) == "bootstrap")
            #expect(try service.adminTokenName(for: service.format.generate()) == nil)
            service.close()
            service = try KeyService.open(path: path, clock: clock)
            defer { service.close() }
            #expect(try service.adminTokenName(for: token) == "bootstrap")
            #expect(try service.revokeAdminToken(name: "bootstrap", actor: "sec"))
            #expect(try service.adminTokenName(for: token) == nil)
            #expect(try service.revokeAdminToken(name: "bootstrap", actor: "sec") == false)

            // Both changes are in the audit trail (numbered by the lookups above), with who made
            // them; the failed revoke is not.
            let events = try service.listAuditEvents(AuditQuery()).events
            #expect(events.map(\.action) == [.adminTokenRevoked, .adminTokenCreated])
            #expect(events.map(\.actor) == ["sec", "ops"])
            #expect(events.allSatisfy { $0.detail.contains("\"bootstrap\"") && $0.keyID.isEmpty })
            #expect(try service.listAuditEvents(AuditQuery(action: .adminTokenCreated)).events.count == 1)
        }
    }
}
