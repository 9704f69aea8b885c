import APIKeysServer
import APIKeysStore
import ArgumentParser

/// `--data-dir`, shared by every subcommand that opens the store.
struct DataDirectoryOption: ParsableArguments {
    @Option(
        name: .customLong("data-dir"),
        help: "Directory of the database and the first admin token (env APIKEYD_DATA_DIR).")
    var path: String = Environment.string("APIKEYD_DATA_DIR", default: ServerConfiguration().dataDirectory)

    /// Runs `body` with the key store of this data directory, closed afterwards.
    func withStore<R>(_ body: (KeyService) throws -> R) throws -> R {
        var configuration = ServerConfiguration()
        configuration.dataDirectory = path
        let service = try KeyService.open(path: configuration.databasePath)
        defer { service.close() }
        return try body(service)
    }
}
