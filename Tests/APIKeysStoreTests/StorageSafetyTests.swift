import APIKeysCore
import APIKeysTestSupport
import Foundation
import Testing
@testable import APIKeysSQLite
@testable import APIKeysStore

@Suite struct StorageSafetyTests {
    @Test func noRawSecretIsWrittenAnywhereInTheDataDirectory() async throws {
        try await withTemporaryDirectory { dir in
            let service = try KeyService.open(path: dir + "/apikeys.sqlite")
            var secrets: [String] = []
            for index in 0..<20 {
                let issued = try await service.createKey(name: "k\(index)", permissions: ["jobs:read"], actor: "ops")
                secrets.append(issued.secret)
                secrets.append(try await service.rotateKey(id: issued.key.id, actor: "ops").secret)
                _ = try service.check(secret: secrets.last!, permissions: ["jobs:read"], resource: "GET /")
            }
            secrets.append(try await service.createAdminToken(name: "admin", actor: "test"))
            await service.flushAuditTrail()
            // Read while open (WAL and shared memory present) and again after close (checkpointed).
            try await expectNoSecret(secrets, in: dir)
            service.close()
            try await expectNoSecret(secrets, in: dir)
        }
    }

    private func expectNoSecret(_ secrets: [String], in dir: String) async throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: dir)
        #expect(!files.isEmpty)
        for file in files {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/" + file)))
            for secret in secrets {
                // The random body alone (no prefix) must not appear either.
                let body = Array(secret.utf8.dropFirst(4).prefix(40))
                #expect(!contains(bytes, body), "a secret's body is in \(file)")
            }
        }
    }

    /// Foundation's search (built optimised): a byte loop in a debug build held a cooperative
    /// thread for tens of seconds, stalling the other suites' database calls past their timeouts.
    private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        Data(haystack).range(of: Data(needle)) != nil
    }

    @Test func corruptFileGivesAClearError() async throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/apikeys.sqlite"
            try Data(repeating: 0x42, count: 8192).write(to: URL(fileURLWithPath: path))
            #expect {
                try KeyService.open(path: path)
            } throws: { error in
                guard let error = error as? StoreError, error.code == .corrupt, let errorPath = error.path else {
                    return false
                }
                return errorPath == path
            }
        }
    }

    /// A database a later version migrated is refused, by name, rather than written to.
    @Test func aSchemaNewerThanThisVersionIsRefused() async throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/apikeys.sqlite"
            try KeyService.open(path: path).close()
            let db = try SQLiteConnection(path: path)
            try db.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
            db.close()
            #expect {
                try KeyService.open(path: path)
            } throws: { error in
                "\(error)".contains("migration 999, newer than this apikeyd knows")
            }
        }
    }

    @Test func unreadableLocationGivesAClearError() async throws {
        #expect {
            try KeyService.open(path: "/nonexistent-dir-apikeys/apikeys.sqlite")
        } throws: { error in
            guard let error = error as? StoreError, error.code == .cannotOpen, let path = error.path else {
                return false
            }
            return path == "/nonexistent-dir-apikeys/apikeys.sqlite"
        }
    }

    @Test func databaseLockedByAnotherWriterGivesAClearError() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/apikeys.sqlite"
            let service = try KeyService.open(path: path, busyTimeoutMS: 50)
            defer { service.close() }
            let other = try SQLiteConnection(path: path)
            try other.execute("BEGIN EXCLUSIVE")
            await #expect {
                try await service.createKey(name: "blocked", permissions: ["jobs:read"], actor: "ops")
            } throws: { error in
                guard let error = error as? StoreError, error.code == .locked, let errorPath = error.path else {
                    return false
                }
                return errorPath == path
            }
            try other.execute("ROLLBACK")
            // Nothing was half-done: the key does not exist and the next create works.
            #expect(try await service.listKeys().keys.isEmpty)
            #expect(service.index.count == 0)
            #expect(
                try await service.createKey(name: "after", permissions: ["jobs:read"], actor: "ops").key.name == "after"
            )
        }
    }
}
