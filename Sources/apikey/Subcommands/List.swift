import APIKeysClient
import APIKeysJSON
import ArgumentParser

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List every key, oldest first.")

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    /// Every key, oldest first, page by page.
    static func allKeys(_ client: APIKeysClient) async throws -> [ApiKey] {
        var keys: [ApiKey] = []
        var token = ""
        repeat {
            let page = try await client.listKeys(pageSize: 500, pageToken: token)
            keys += page.keys
            token = page.nextPageToken
        } while !token.isEmpty
        return keys
    }

    func run() async throws {
        let keys = try await connection.withClient { try await Self.allKeys($0) }
        if output.json {
            print(Output.json(keys.map(KeyJSON.init)))
            return
        }
        guard !keys.isEmpty else {
            print("No keys. Create one with: apikey create NAME --permission jobs:read")
            return
        }
        print(
            Output.table(
                ["ID", "NAME", "HINT", "ENABLED", "EXPIRES", "LAST USED", "PERMISSIONS"],
                keys.map { key in
                    [
                        key.id, key.name, key.hint, key.enabled ? "yes" : "no", Output.time(key.expiresAtMS),
                        Output.time(key.lastUsedAtMS), key.permissions.joined(separator: " "),
                    ]
                }))
    }
}
