import APIKeysClient
import ArgumentParser

struct Permissions: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the permissions keys can be granted.")
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let permissions = try await connection.withClient { try await $0.listPermissions() }
        print(Output.table(["PERMISSION", "DESCRIPTION"], permissions.map { [$0.name, $0.description] }))
    }
}
