import APIKeysSQLite
import APIKeysStore
import ArgumentParser
import Foundation

/// Fills a data directory with keys, for start-up and memory measurements.
struct SeedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seed", abstract: "Create many keys in a data directory (the server must not be running).")

    @Option(help: "Data directory.") var dataDir: String
    @Option(help: "Keys to create.") var keys = 1_000_000
    @Option(help: "Write the secret of the last key created here.") var secretFile: String?

    func run() async throws {
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let service = try KeyService.open(path: dataDir + "/apikeys.sqlite")
        defer { service.close() }
        let start = Date()
        var last = ""
        var created = 0
        while created < keys {
            let batch = (created..<min(keys, created + 10_000)).map {
                KeyService.NewKey(name: "seed \($0)", permissions: ["jobs:read", "jobs:write", "history:read"])
            }
            last = try await service.createKeys(batch, actor: "seed").last!.secret
            created += batch.count
        }
        if let secretFile { try last.write(toFile: secretFile, atomically: true, encoding: .utf8) }
        print(String(format: "seeded %d keys in %.1f s", created, Date().timeIntervalSince(start)))
    }
}
