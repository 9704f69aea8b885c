import APIKeysClient
import APIKeysJSON
import ArgumentParser

struct Permissions: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the permissions keys can be granted.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let permissions = try await connection.withClient { try await $0.listPermissions() }
        if output.json {
            return print(Output.json(permissions.map(PermissionJSON.init)))
        }
        print(Output.table(["PERMISSION", "DESCRIPTION"], permissions.map { [$0.name, $0.description] }))
    }
}
