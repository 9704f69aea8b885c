import APIKeysClient
import ArgumentParser
import Foundation

struct Report: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List keys that need a look: never used, idle, expiring soon, beyond the server's maximum lifetime.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    @Option(help: "A used key not used for this many days is idle.")
    var idleDays: Int = 30

    @Option(help: "List keys that expire within this many days.")
    var expiringDays: Int = 14

    func validate() throws {
        guard idleDays >= 0, expiringDays >= 0 else { throw ValidationError("--idle-days and --expiring-days are ≥ 0") }
    }

    func run() async throws {
        let (keys, policy) = try await connection.withClient { client in
            (try await List.allKeys(client), try await client.getPolicy())
        }
        let day: Int64 = 86_400_000
        let criteria = KeyHygiene.Criteria(
            nowMS: Int64(Date().timeIntervalSince1970 * 1000), idleMS: Int64(idleDays) * day,
            expiringMS: Int64(expiringDays) * day,
            maxLifetimeMS: policy.maxKeyLifetimeMS > 0 ? policy.maxKeyLifetimeMS : nil)
        let listed = keys.compactMap { key -> (ApiKey, [KeyHygiene.Finding])? in
            let findings = KeyHygiene.findings(for: key, criteria)
            return findings.isEmpty ? nil : (key, findings)
        }
        if output.json {
            print(Output.json(listed.map { Output.ReportJSON(key: $0.0, findings: $0.1.map(\.rawValue)) }))
            return
        }
        guard !listed.isEmpty else {
            print("All \(keys.count) keys in order.")
            return
        }
        print(
            Output.table(
                ["ID", "NAME", "FINDINGS", "CREATED", "LAST USED", "EXPIRES", "ENABLED"],
                listed.map { key, findings in
                    [
                        key.id, key.name, findings.map(\.rawValue).joined(separator: " "), Output.time(key.createdAtMS),
                        Output.time(key.lastUsedAtMS), Output.time(key.expiresAtMS), key.enabled ? "yes" : "no",
                    ]
                }))
    }
}
