import APIKeysCore
import APIKeysTestSupport
import Dispatch
import Foundation
import Logging
import Synchronization
import Testing
@testable import APIKeysPostgres
@testable import APIKeysSQLite
@testable import APIKeysStore

/// The stores a behavioural test runs against: both, always. Without the cluster of
/// `Tests/postgres/with-cluster.sh` (APIKEYS_TEST_DATABASE_URL) the PostgreSQL case is cancelled,
/// which the run reports as skipped and `make test` fails on, instead of being left out unseen.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite
    case postgres

    static var available: [StoreKind] { allCases }

    /// Cancels the current test case when it needs PostgreSQL and the run has no cluster. The
    /// console output does not show a cancelled test case, so it is said on standard error in
    /// the form Tests/swift-test.sh counts.
    func requireStore() throws {
        if self == .postgres && TestDatabase.url == nil {
            let name = Test.current?.name ?? "?"
            FileHandle.standardError.write(Data("➜ Test case postgres of \(name) cancelled: needs PostgreSQL\n".utf8))
            try Test.cancel("needs PostgreSQL: run under Tests/postgres/with-cluster.sh")
        }
    }

    var testDescription: String { rawValue }
}

/// Runs `body` with a key service on a new, empty store (a SQLite file in a temporary directory,
/// or a new PostgreSQL database), closed afterwards. `maxStalenessMS`: PostgreSQL's bound, to
/// raise for a test that moves the clock on by more than 10 s. `valve`: the audit trail's disk
/// stalls while it is held.
func withService<R>(
    _ kind: StoreKind = .sqlite, clock: ManualWallClock = ManualWallClock(nowMS: 1_700_000_000_000),
    maxStalenessMS: Int64 = 10_000, auditRetentionMS: Int64 = 0, historyRetentionMS: Int64 = 0,
    valve: AuditSinkValve? = nil, _ body: (KeyService, String) async throws -> R
) async throws -> R {
    try kind.requireStore()
    return try await withTemporaryDirectory { dir in
        let service: KeyService
        switch kind {
        case .sqlite:
            service = try openSQLiteService(
                path: dir + "/apikeys.sqlite", clock: clock, auditRetentionMS: auditRetentionMS,
                historyRetentionMS: historyRetentionMS, valve: valve)
        case .postgres:
            service = try await TestDatabase.openService(
                clock: clock, maxStalenessMS: maxStalenessMS, auditRetentionMS: auditRetentionMS,
                historyRetentionMS: historyRetentionMS, valve: valve)
        }
        do {
            let result = try await body(service, dir)
            await service.close(timeout: .seconds(10))
            return result
        } catch {
            await service.close(timeout: .seconds(10))
            throw error
        }
    }
}

/// A key service on the SQLite file at `path`, its audit writes through `valve` when one is given.
func openSQLiteService(
    path: String, clock: any WallClock, auditRetentionMS: Int64 = 0, historyRetentionMS: Int64 = 0,
    valve: AuditSinkValve? = nil
) throws -> KeyService {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
    let store = try SQLiteKeyStore.open(
        path: path, catalog: .standard, clock: clock, auditMode: .full,
        auditQueueCapacity: KeyService.defaultAuditQueueCapacity, auditRetentionMS: auditRetentionMS,
        historyRetentionMS: historyRetentionMS, busyTimeoutMS: 5000,
        minFreeDiskBytes: KeyService.defaultMinFreeDiskBytes,
        decorateAuditSink: valve?.decorator, logger: logger)
    return KeyService(store: store, format: .standard, clock: clock, logger: logger)
}

extension TestDatabase {
    /// A key service on a new PostgreSQL database of the test cluster.
    static func openService(
        clock: any WallClock, maxStalenessMS: Int64 = 10_000, auditRetentionMS: Int64 = 0,
        historyRetentionMS: Int64 = 0, url: String? = nil, valve: AuditSinkValve? = nil
    ) async throws -> KeyService {
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let databaseURL: String
        if let url { databaseURL = url } else { databaseURL = try await createDatabase() }
        let store = try await PostgresKeyStore.open(
            location: try PostgresLocation(url: databaseURL), catalog: .standard, clock: clock,
            auditMode: .full, auditQueueCapacity: KeyService.defaultAuditQueueCapacity,
            auditRetentionMS: auditRetentionMS, historyRetentionMS: historyRetentionMS,
            maxStalenessMS: maxStalenessMS, decorateAuditSink: valve?.decorator, logger: logger)
        return KeyService(store: store, format: .standard, clock: clock, logger: logger)
    }
}

/// Polls `condition` every 20 ms until it holds; records an issue if it does not within 5 s (a
/// change on one replica reaching another).
func eventually(_ condition: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(5)
    while try !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("condition not met within 5 s")
            return
        }
        try await Task.sleep(for: .milliseconds(20))
    }
}

/// Runs `body` with a way to open key services on one store more than once (a restart, a second
/// replica): a SQLite file in a temporary directory, or one new PostgreSQL database. `body`
/// closes what it opens.
func withReopenableStore<R>(
    _ kind: StoreKind, clock: ManualWallClock, maxStalenessMS: Int64 = 10_000, valve: AuditSinkValve? = nil,
    _ body: (_ open: () async throws -> KeyService) async throws -> R
) async throws -> R {
    try kind.requireStore()
    return try await withTemporaryDirectory { dir in
        let url = kind == .postgres ? try await TestDatabase.createDatabase() : nil
        return try await body {
            if let url {
                return try await TestDatabase.openService(
                    clock: clock, maxStalenessMS: maxStalenessMS, url: url, valve: valve)
            }
            return try openSQLiteService(path: dir + "/apikeys.sqlite", clock: clock, valve: valve)
        }
    }
}
