import APIKeysStore
import ArgumentParser

/// `--data-dir`, shared by every subcommand that opens the store.
struct DataDirectoryOption: ParsableArguments {
    @Option(
        name: .customLong("data-dir"),
        help: "Directory of the database and the first admin token (env APIKEYD_DATA_DIR).")
    var path: String = Environment.string("APIKEYD_DATA_DIR", default: "./data")

    /// Runs `body` with the key store of this data directory, closed afterwards.
    func withStore<R>(_ body: (KeyService) throws -> R) throws -> R {
        let service = try KeyService.open(path: path + "/apikeys.sqlite")
        defer { service.close() }
        return try body(service)
    }
}
