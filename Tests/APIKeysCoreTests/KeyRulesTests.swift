import Testing
@testable import APIKeysCore

@Suite struct KeyRulesTests {
    @Test func namesAreTrimmed() throws {
        #expect(try KeyRules.validName("  ci pipeline \n") == "ci pipeline")
    }

    @Test(arguments: ["", "   ", "\n\t"])
    func emptyNamesAreRejected(name: String) {
        #expect(throws: KeyError.invalidName("must not be empty")) { try KeyRules.validName(name) }
    }

    @Test func nameLengthIsCountedInCharacters() throws {
        #expect(try KeyRules.validName(String(repeating: "é", count: 100)).count == 100)
        #expect(throws: KeyError.invalidName("must be at most 100 characters, not 101")) {
            try KeyRules.validName(String(repeating: "a", count: 101))
        }
    }

    @Test(arguments: ["a\u{0}b", "a\u{7}b", "line\nbreak", "del\u{7F}"])
    func controlCharactersAreRejected(name: String) {
        #expect(throws: KeyError.self) { try KeyRules.validName(name) }
    }

    @Test func expiryMustBeInTheFuture() throws {
        #expect(try KeyRules.validExpiry(0, nowMS: 1000) == nil)
        #expect(try KeyRules.validExpiry(1001, nowMS: 1000) == 1001)
        #expect(throws: KeyError.expiryNotInFuture(expiresAtMS: 1000, nowMS: 1000)) {
            try KeyRules.validExpiry(1000, nowMS: 1000)
        }
        #expect(throws: KeyError.expiryNotInFuture(expiresAtMS: -5, nowMS: 1000)) {
            try KeyRules.validExpiry(-5, nowMS: 1000)
        }
    }

    @Test func catalogValidatesDeduplicatesAndOrders() throws {
        let catalog = PermissionCatalog.standard
        #expect(catalog.entries.count == 10)
        #expect(try catalog.validate(["vault:read", "jobs:read", "vault:read"]) == ["jobs:read", "vault:read"])
        #expect(throws: KeyError.noPermissions) { try catalog.validate([]) }
        #expect(throws: KeyError.unknownPermission("jobs:*")) { try catalog.validate(["jobs:read", "jobs:*"]) }
        #expect(throws: KeyError.unknownPermission("admin")) { try catalog.validate(["admin"]) }
    }

    @Test func catalogCanBeReplaced() throws {
        let catalog = try PermissionCatalog([.init(name: "reports:read", description: "Read reports")])
        #expect(try catalog.validate(["reports:read"]) == ["reports:read"])
        #expect(throws: KeyError.unknownPermission("jobs:read")) { try catalog.validate(["jobs:read"]) }
        #expect(throws: KeyError.self) { try PermissionCatalog([]) }
        #expect(throws: KeyError.self) {
            try PermissionCatalog([.init(name: "a:b", description: ""), .init(name: "a:b", description: "")])
        }
        #expect(throws: KeyError.self) { try PermissionCatalog([.init(name: "Has Space", description: "")]) }
    }

    @Test func catalogParsesFromText() throws {
        let catalog = try PermissionCatalog(
            parsing: """
                # reports service
                reports:read    Read reports

                reports:write\tCreate and delete reports
                """)
        #expect(
            catalog.entries == [
                .init(name: "reports:read", description: "Read reports"),
                .init(name: "reports:write", description: "Create and delete reports"),
            ])
        #expect(throws: KeyError.invalidCatalog("line 1: \"reports:read\" has no description")) {
            try PermissionCatalog(parsing: "reports:read")
        }
        #expect(throws: KeyError.self) { try PermissionCatalog(parsing: "# nothing\n") }
    }
}
