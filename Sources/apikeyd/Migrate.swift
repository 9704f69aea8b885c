import APIKeysServer
import ArgumentParser
import Logging

/// `apikeyd migrate`: bring the store's schema up to date without serving (every start does it too).
struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply the schema migrations of the store (PostgreSQL: under an advisory lock, once for all replicas).")

    @OptionGroup var store: StoreOptions

    func run() async throws {
        print(try await APIKeysServer.migrate(store.configuration, logger: Logger(label: "apikeyd", factory: { _ in SwiftLogNoOpLogHandler() })))
    }
}
