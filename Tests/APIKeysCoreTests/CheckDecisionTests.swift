import Testing
@testable import APIKeysCore

@Suite struct CheckDecisionTests {
    let format = SecretFormat.standard
    let clock = ManualWallClock(nowMS: 1_000_000)

    /// An index holding one key with `permissions`; returns the index and the key's secret.
    private func index(
        permissions: [String] = ["jobs:read", "jobs:write"], enabled: Bool = true, expiresAtMS: Int64? = nil
    ) -> (KeyIndex, String) {
        let index = KeyIndex(catalog: .standard)
        let secret = format.generate()
        index.upsert(
            KeyCheckState(
                id: "key_1", name: "ci", permissions: PermissionCatalog.standard.mask(of: permissions),
                enabled: enabled,
                expiresAtMS: expiresAtMS),
            hash: SecretHash(of: secret))
        return (index, secret)
    }

    private func check(_ index: KeyIndex, _ secret: String, _ permissions: [String] = []) -> CheckOutcome {
        index.check(secret: secret, permissions: permissions, format: format, nowMS: clock.nowMS())
    }

    @Test func allowsALiveKeyWithEveryPermission() {
        let (index, secret) = index()
        let outcome = check(index, secret, ["jobs:read", "jobs:write"])
        #expect(outcome.isAllowed)
        #expect(outcome.httpStatus == 200)
        #expect(outcome.key?.id == "key_1")
        #expect(check(index, "Bearer " + secret, ["jobs:read"]).isAllowed)
        #expect(check(index, secret, []).isAllowed)
    }

    @Test func malformedBeforeAnythingElse() {
        let (index, secret) = index(enabled: false)
        let outcome = check(index, String(secret.dropLast()) + "!", ["vault:read"])
        #expect(outcome.denial == .malformedKey)
        #expect(outcome.httpStatus == 401)
        #expect(outcome.key == nil)
    }

    @Test func unknownWellFormedKey() {
        let (index, _) = index()
        #expect(check(index, format.generate()).denial == .unknownKey)
    }

    @Test func disabledWinsOverExpiredAndMissing() {
        let (index, secret) = index(enabled: false, expiresAtMS: clock.nowMS() - 1)
        let outcome = check(index, secret, ["vault:read"])
        #expect(outcome.denial == .disabled)
        #expect(outcome.httpStatus == 401)
    }

    @Test func expiryIsJudgedByTheInjectedClock() {
        let (index, secret) = index(expiresAtMS: clock.nowMS() + 10)
        #expect(check(index, secret).isAllowed)
        clock.advance(byMS: 9)
        #expect(check(index, secret).isAllowed)
        clock.advance(byMS: 1)
        let outcome = check(index, secret, ["vault:read"])
        #expect(outcome.denial == .expired)
        #expect(outcome.httpStatus == 401)
    }

    @Test func missingPermissionsAreListedOnceInTheOrderAsked() {
        let (index, secret) = index()
        let outcome = check(index, secret, ["vault:read", "jobs:read", "no:such", "vault:read"])
        #expect(outcome.denial == .missingPermission)
        #expect(outcome.httpStatus == 403)
        #expect(outcome.missingPermissions == ["vault:read", "no:such"])
    }

    /// A name the catalog lacks adds no bit to what a check asks: a key holding every
    /// permission of the catalog still lacks it.
    @Test func aNameNotInTheCatalogIsMissingFromAKeyHoldingEveryOther() {
        let (index, secret) = index(permissions: PermissionCatalog.standard.entries.map(\.name))
        #expect(check(index, secret, ["jobs:read", "no:such"]).missingPermissions == ["no:such"])
        #expect(check(index, secret, ["no:such", "no:such"]).missingPermissions == ["no:such"])
        #expect(check(index, secret, ["vault:read", "jobs:read"]).isAllowed)
    }

    @Test func rotatedAndRemovedKeysAreUnknown() {
        let (index, oldSecret) = index()
        let newSecret = format.generate()
        let state = index.lookup(SecretHash(of: oldSecret))!
        index.upsert(state, hash: SecretHash(of: newSecret), replacing: SecretHash(of: oldSecret))
        #expect(check(index, oldSecret).denial == .unknownKey)
        #expect(check(index, newSecret).isAllowed)
        #expect(index.count == 1)
        index.remove(hash: SecretHash(of: newSecret))
        #expect(check(index, newSecret).denial == .unknownKey)
        #expect(index.count == 0)
    }

    @Test func permissionMasksFollowTheCatalog() throws {
        let catalog = PermissionCatalog.standard
        let mask = catalog.mask(of: ["jobs:read", "vault:read", "no:such"])
        #expect(mask == catalog.mask(of: ["vault:read", "jobs:read"]))
        #expect(catalog.grants(mask, "jobs:read") && catalog.grants(mask, "vault:read"))
        #expect(!catalog.grants(mask, "jobs:write") && !catalog.grants(mask, "no:such"))
        let wide = (0..<64).map { PermissionCatalog.Entry(name: "p:\($0)", description: "") }
        let big = try PermissionCatalog(wide)
        #expect(big.grants(big.mask(of: ["p:63"]), "p:63") && !big.grants(big.mask(of: ["p:63"]), "p:0"))
        #expect(throws: KeyError.self) { try PermissionCatalog(wide + [.init(name: "p:64", description: "")]) }
    }

    /// A million entries sit in the index: the rarely set policies must not grow each one (they
    /// had grown each, and RSS at 1M keys from 275 to 435 MB, before they went behind one reference).
    @Test func anIndexEntryStaysSmall() {
        #expect(MemoryLayout<KeyCheckState>.stride == 8)
        #expect(KeyCheckState.boxBytes <= 88)
    }

    /// The fields sit behind a shared reference: a change to one copy leaves every other as it was.
    @Test func aKeyStateKeepsValueSemantics() {
        let original = KeyCheckState(
            id: "key_1", name: "ci", permissions: PermissionCatalog.standard.mask(of: ["jobs:read"]), enabled: true,
            expiresAtMS: nil)
        var changed = original
        #expect(changed == original)
        changed.enabled = false
        changed.name = "cd"
        changed.graceEndsAtMS = 5
        changed.allowedNetworks = [IPNetwork("10.0.0.0/8")!]
        #expect(original.enabled && original.name == "ci" && original.graceEndsAtMS == nil)
        #expect(original.allowedNetworks.isEmpty)
        #expect(!changed.enabled && changed.name == "cd" && changed.graceEndsAtMS == 5)
        #expect(changed != original)
        var again = changed
        again.name = "ci"
        again.enabled = true
        again.graceEndsAtMS = nil
        again.allowedNetworks = []
        #expect(again == original && again.hashValue == original.hashValue)
    }

    @Test func denialOrderIsTheContractOrder() {
        #expect(
            Denial.allCases.sorted() == [
                .invalidRequest, .malformedKey, .unknownKey, .disabled, .expired, .missingPermission, .ipNotAllowed,
                .usageExceeded,
                .rateLimited,
            ])
        #expect(Denial.allCases.map(\.httpStatus) == [400, 401, 401, 401, 401, 403, 403, 403, 429])
        // The wire numbers follow the order reasons were added, not their precedence.
        #expect(Denial.allCases.map(\.rawValue) == [9, 1, 2, 3, 4, 5, 6, 8, 7])
    }
}
