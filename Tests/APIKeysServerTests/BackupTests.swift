import APIKeysClient
import APIKeysCore
import APIKeysServer
import APIKeysTestSupport
import Foundation
import Synchronization
import Testing
@testable import APIKeysSQLite
@_spi(Testing) import APIKeysStore

/// `apikeyd backup` and `apikeyd restore`: a consistent copy taken while the server serves and
/// writes, never a partial file where the copy should be, and a restore that is checked before it
/// is put in place and refused where it would overwrite what a server uses.
@Suite struct BackupTests {
    static let apikeyd = ExecutableTests.apikeyd

    /// What the load's tasks share: the keys whose creation was acknowledged, and when to stop.
    private final class Load: Sendable {
        let acknowledged = Mutex<Set<String>>([])
        let stop = Atomic<Bool>(false)
    }

    /// `PRAGMA integrity_check` of the database at `path`, read by a connection of the test's own.
    private static func integrity(_ path: String) throws -> String {
        let db = try SQLiteConnection(path: path, create: false)
        defer { db.close() }
        return try db.statement("PRAGMA integrity_check").firstRow { $0.text(0) } ?? ""
    }

    /// The names of every key in the store at `path`, its chain verified.
    private static func namesAndChain(_ path: String) async throws -> (Set<String>, AuditChainVerification) {
        let service = try KeyService.open(path: path)
        do {
            var names: Set<String> = []
            var token: String?
            repeat {
                let page = try await service.listKeys(pageSize: 1000, pageToken: token)
                names.formUnion(page.keys.map(\.name))
                token = page.nextPageToken
            } while token != nil
            let chain = try await service.verifyAuditChain()
            await service.close(timeout: .seconds(10))
            return (names, chain)
        } catch {
            await service.close(timeout: .seconds(10))
            throw error
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: apikeyd.path)), .timeLimit(.minutes(2)))
    func aBackupUnderLoadHoldsEveryAcknowledgedKeyAndVerifies() async throws {
        let out = try makeTemporaryDirectory("apikeyd-backup")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let copy = out + "/copy.sqlite"
        try await withServer { server, client in
            let probe = try await client.createKey(name: "probe", permissions: ["jobs:read"])
            let load = Load()
            let (before, run, checks) = try await withThrowingTaskGroup(of: Int.self) { group in
                for writer in 0..<4 {
                    group.addTask {
                        var made = 0
                        while !load.stop.load(ordering: .relaxed) {
                            let name = "w\(writer)-\(made)"
                            _ = try await client.createKey(name: name, permissions: ["jobs:read"])
                            load.acknowledged.withLock { _ = $0.insert(name) }
                            made += 1
                        }
                        return 0
                    }
                }
                for _ in 0..<4 {
                    group.addTask {
                        var checks = 0
                        while !load.stop.load(ordering: .relaxed) {
                            let answer = try await client.check(key: probe.secret, permissions: ["jobs:read"])
                            #expect(answer.decision == .allow)
                            checks += 1
                        }
                        return checks
                    }
                }
                // Some keys acknowledged first (a loaded machine makes them slowly).
                let waitUntil = ContinuousClock.now + .seconds(30)
                while load.acknowledged.withLock({ $0.count }) < 8 && ContinuousClock.now < waitUntil {
                    try await Task.sleep(for: .milliseconds(20))
                }
                let before = load.acknowledged.withLock { $0 }
                let run = try await runCommand(
                    Self.apikeyd, ["backup", "--data-dir", server.dataDirectory, "--to", copy])
                // Keys keep being made after it: wait for one more than it could have seen.
                let known = load.acknowledged.withLock { $0.count }
                while load.acknowledged.withLock({ $0.count }) <= known && ContinuousClock.now < waitUntil {
                    try await Task.sleep(for: .milliseconds(20))
                }
                load.stop.store(true, ordering: .relaxed)
                let checks = try await group.reduce(0, +)
                return (before, run, checks)
            }
            #expect(run.status == 0, "\(run.stderr)")
            #expect(run.stdout.contains("audit chain verified"), "\(run.stdout)")
            #expect(before.count >= 8 && checks > 0, "the load did not run: \(before.count) keys, \(checks) checks")
            let mode = try FileManager.default.attributesOfItem(atPath: copy)[.posixPermissions] as? Int
            #expect(mode == 0o600)
            #expect(try Self.integrity(copy) == "ok")
            let (names, chain) = try await Self.namesAndChain(copy)
            #expect(
                before.isSubset(of: names), "acknowledged before the backup but not in it: \(before.subtracting(names))"
            )
            #expect(names.contains("probe") && chain.links > 0)
            // Taken while keys were being made: the server went on making them after it.
            let live = load.acknowledged.withLock { $0 }
            #expect(live.count > before.count)
            // A second backup to the same file is refused and leaves the first as it was.
            let again = try await runCommand(
                Self.apikeyd, ["backup", "--data-dir", server.dataDirectory, "--to", copy])
            #expect(again.status != 0 && again.stderr.contains("never overwrites"), "\(again.stderr)")
            #expect(try await Self.namesAndChain(copy).0 == names)
        }
    }

    /// kill -9 of `apikeyd backup` at any moment: where the copy should be there is either
    /// nothing or a whole copy that verifies, and the live store is intact.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: apikeyd.path)), .timeLimit(.minutes(2)))
    func aBackupKilledMidwayLeavesNoPartialCopy() async throws {
        let dir = try makeTemporaryDirectory("apikeyd-backup-kill")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/apikeys.sqlite"
        // A store of some size (~40 MB of audit events), so that a backup takes a while.
        let service = try KeyService.open(path: path)
        let key = try await service.createKey(name: "busy", permissions: ["jobs:read"], actor: "ops")
        let resource = String(repeating: "r", count: 100)
        for _ in 0..<30 {
            for _ in 0..<10_000 {
                _ = try service.check(secret: key.secret, permissions: ["jobs:read"], resource: resource)
            }
            await service.flushAuditTrail()
        }
        await service.close(timeout: .seconds(10))

        var killedMidway = 0
        for attempt in 0..<8 {
            let copy = dir + "/copy-\(attempt).sqlite"
            let process = ChildProcess()
            process.executableURL = Self.apikeyd
            process.arguments = ["backup", "--data-dir", dir, "--to", copy]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            try await Task.sleep(for: .milliseconds(20 + 40 * attempt))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            if FileManager.default.fileExists(atPath: copy) {
                #expect(try Self.integrity(copy) == "ok")
                #expect(try await Self.namesAndChain(copy).1.events >= 300_000)
            } else {
                killedMidway += 1
            }
            #expect(try Self.integrity(path) == "ok")
        }
        #expect(killedMidway > 0, "every backup finished before its kill: the test proved nothing")
        // The next backup clears what the killed ones left behind and succeeds.
        let run = try await runCommand(Self.apikeyd, ["backup", "--data-dir", dir, "--to", dir + "/copy-final.sqlite"])
        #expect(run.status == 0, "\(run.stderr)")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".partial-") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    /// A copy restored into a new data directory serves: its keys are as they were when the copy
    /// was taken (a key disabled after it is enabled again, as the restore warns).
    @Test(.timeLimit(.minutes(1)))
    func aRestoredCopyServesTheKeysAsTheyWereWhenItWasTaken() async throws {
        let out = try makeTemporaryDirectory("apikeyd-restore")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let copy = out + "/copy.sqlite"
        let (kept, disabledLater) = try await withServer { server, client in
            let kept = try await client.createKey(name: "kept", permissions: ["jobs:read"])
            let disabledLater = try await client.createKey(name: "disabled-later", permissions: ["jobs:read"])
            var configuration = ServerConfiguration()
            configuration.dataDirectory = server.dataDirectory
            let summary = try await APIKeysServer.backup(configuration, to: copy)
            #expect(summary.keys == 2)
            _ = try await client.setKeyEnabled(id: disabledLater.key.id, enabled: false)
            // No restore over a directory a server holds, whatever the flags.
            await #expect(throws: ServerError.self) {
                _ = try await APIKeysServer.restore(configuration, from: copy, replace: true)
            }
            #expect(try await client.check(key: disabledLater.secret).decision == .deny)
            return (kept, disabledLater)
        }
        let restored = out + "/restored"
        var configuration = ServerConfiguration()
        configuration.dataDirectory = restored
        let summary = try await APIKeysServer.restore(configuration, from: copy, replace: false)
        #expect(summary.keys == 2 && summary.takenAtMS > 0)
        // Over an existing store only with replace, which keeps the old one beside it.
        await #expect(throws: StoreError.self) {
            _ = try await APIKeysServer.restore(configuration, from: copy, replace: false)
        }
        _ = try await APIKeysServer.restore(configuration, from: copy, replace: true)
        #expect(try FileManager.default.contentsOfDirectory(atPath: restored).contains { $0.contains(".replaced-") })

        let server = try await TestServer.start(
            dataDirectory: restored, clock: ManualWallClock(nowMS: Int64(Date().timeIntervalSince1970 * 1000)))
        let client = APIKeysClient(configuration: .init(port: server.port, adminToken: "none"))
        #expect(try await client.check(key: kept.secret, permissions: ["jobs:read"]).decision == .allow)
        #expect(try await client.check(key: disabledLater.secret, permissions: ["jobs:read"]).decision == .allow)
        await client.close()
        _ = await server.server.shutdown()
    }

    /// A damaged copy or one whose audit trail was edited is refused, and nothing is put in place.
    @Test func aDamagedOrEditedCopyIsNotRestored() async throws {
        let out = try makeTemporaryDirectory("apikeyd-restore-bad")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let copy = out + "/copy.sqlite"
        try await withServer { server, client in
            let key = try await client.createKey(name: "k", permissions: ["jobs:read"])
            for _ in 0..<20 { _ = try await client.check(key: key.secret) }
            await server.server.service.flushAuditTrail()
            _ = try await client.setKeyEnabled(id: key.key.id, enabled: false)
            var configuration = ServerConfiguration()
            configuration.dataDirectory = server.dataDirectory
            _ = try await APIKeysServer.backup(configuration, to: copy)
        }
        var configuration = ServerConfiguration()
        configuration.dataDirectory = out + "/target"

        let edited = out + "/edited.sqlite"
        try FileManager.default.copyItem(atPath: copy, toPath: edited)
        let db = try SQLiteConnection(path: edited, create: false)
        try db.execute("UPDATE audit_events SET actor = 'someone else' WHERE action = 'key.disabled'")
        db.close()
        let chainError = await #expect(throws: StoreError.self) {
            _ = try await APIKeysServer.restore(configuration, from: edited, replace: false)
        }
        #expect(
            chainError?.description.contains("audit chain does not verify") == true, "\(String(describing: chainError))"
        )

        let damaged = out + "/damaged.sqlite"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: copy)))
        for offset in stride(from: 4096 * 3, to: min(bytes.count, 4096 * 6), by: 7) { bytes[offset] ^= 0x5a }
        try Data(bytes).write(to: URL(fileURLWithPath: damaged))
        await #expect(throws: StoreError.self) {
            _ = try await APIKeysServer.restore(configuration, from: damaged, replace: false)
        }
        let left = (try? FileManager.default.contentsOfDirectory(atPath: out + "/target")) ?? []
        #expect(!left.contains { $0.hasPrefix("apikeys.sqlite") || $0.contains(".partial-") }, "\(left)")
    }
}
