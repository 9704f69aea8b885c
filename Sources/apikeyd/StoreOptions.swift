import APIKeysCore
import APIKeysServer
import APIKeysStore
import ArgumentParser
import Logging

/// Where the store is: `--data-dir` (SQLite, the default) or `--database-url` (PostgreSQL),
/// shared by every subcommand that opens it.
struct StoreOptions: ParsableArguments {
    @Option(
        name: .customLong("data-dir"),
        help: "Directory of the SQLite database and the first admin token's file (env APIKEYD_DATA_DIR).")
    var path: String = Environment.string("APIKEYD_DATA_DIR", default: ServerConfiguration().dataDirectory)

    @Option(
        name: .customLong("database-url"),
        help: "postgres://user[:password]@host[:port]/database: keep everything in PostgreSQL, shared by replicas (env APIKEYD_DATABASE_URL).")
    var databaseURL: String? = Environment.optionalString("APIKEYD_DATABASE_URL")

    @Flag(
        name: .customLong("require-synchronous-standby"),
        help:
            "On PostgreSQL: acknowledge a key change only once a synchronous standby has it (synchronous_commit on; refused while synchronous_standby_names is empty), so that a failover cannot lose it (env APIKEYD_REQUIRE_SYNCHRONOUS_STANDBY=1)."
    )
    var requireSynchronousStandby = Environment.string("APIKEYD_REQUIRE_SYNCHRONOUS_STANDBY", default: "") == "1"

    /// The configuration these options describe (the rest at its defaults).
    var configuration: ServerConfiguration {
        var configuration = ServerConfiguration()
        configuration.dataDirectory = path
        configuration.databaseURL = databaseURL
        configuration.requireSynchronousStandby = requireSynchronousStandby
        return configuration
    }

    /// Runs `body` with this store, closed afterwards. Logs go nowhere: a tool's output is its result.
    func withStore<R>(_ body: (KeyService) async throws -> R) async throws -> R {
        let service = try await APIKeysServer.openKeyService(configuration, logger: Logger(label: "apikeyd", factory: { _ in SwiftLogNoOpLogHandler() }))
        do {
            let result = try await body(service)
            await service.close(timeout: .seconds(10))
            return result
        } catch {
            await service.close(timeout: .seconds(10))
            throw error
        }
    }
}
