import APIKeysCore
import APIKeysPostgres
import APIKeysSQLite
import APIKeysStore
import Foundation
import Logging

/// The store an in-process benchmark measures: a SQLite file in a temporary directory of its own,
/// or a replica on a PostgreSQL database; `close()` closes it and removes the directory.
struct BenchStore {
    let service: KeyService
    /// The PostgreSQL store, when the benchmark runs on one.
    let postgres: PostgresKeyStore?
    private let directory: String

    init(databaseURL: String?, auditQueueCapacity: Int) async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("apikeyd-bench-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if let databaseURL {
            let clock = SystemWallClock()
            let logger = Logger(label: "apikeyd-bench")
            let store = try await PostgresKeyStore.open(
                location: try PostgresLocation(url: databaseURL), catalog: .standard, clock: clock, auditMode: .full,
                auditQueueCapacity: auditQueueCapacity, auditRetentionMS: 0, maxStalenessMS: 10_000, logger: logger)
            service = KeyService(store: store, format: .standard, clock: clock, logger: logger)
            postgres = store
        } else {
            service = try KeyService.open(path: directory + "/bench.sqlite", auditQueueCapacity: auditQueueCapacity)
            postgres = nil
        }
    }

    /// Creates `count` keys holding `jobs:read` and `jobs:write`; returns their secrets.
    func createKeys(_ count: Int) async throws -> [String] {
        var secrets: [String] = []
        for index in 0..<count {
            secrets.append(
                try await service.createKey(
                    name: "bench \(index)", permissions: ["jobs:read", "jobs:write"], actor: "bench"
                ).secret)
        }
        return secrets
    }

    func close() {
        service.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
