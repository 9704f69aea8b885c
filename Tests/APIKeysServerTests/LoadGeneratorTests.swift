import APIKeysClient
import APIKeysCore
import APIKeysTestSupport
import Foundation
import Testing

/// The built `apikeyd-bench load` against a real server: it must count what it measures exactly
/// (replies, decisions, errors), whatever the figures.
@Suite struct LoadGeneratorTests {
    static let binary = productsDirectory.appendingPathComponent("apikeyd-bench")

    /// Runs `apikeyd-bench load` against `server` and returns its `--machine` line as numbers.
    private func load(_ arguments: [String], server: TestServer) async throws -> [String: Double] {
        let result = try await runCommand(
            Self.binary,
            [
                "load", "--port", "\(server.port)", "--token-file", server.dataDirectory + "/admin.token", "--warmup",
                "0.1",
                "--machine",
            ] + arguments)
        #expect(result.status == 0, "\(result.stderr)")
        var fields: [String: Double] = [:]
        for pair in result.stdout.split(whereSeparator: \.isWhitespace) {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2, let value = Double(parts[1]) { fields[String(parts[0])] = value }
        }
        return fields
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: binary.path)))
    func countsEveryReplyAndDecisionOfAFixedNumberOfCalls() async throws {
        try await withServer { server, client in
            let allowed = try await load(["-c", "3", "-P", "4", "-n", "600"], server: server)
            #expect(allowed["replies"] == 600 && allowed["allowed"] == 600 && allowed["errors"] == 0)
            #expect((allowed["rps"] ?? 0) > 0 && (allowed["p99_us"] ?? 0) > 0)

            let unknown = SecretFormat.standard.generate()
            let denied = try await load(["-c", "2", "-n", "50", "--key", unknown], server: server)
            #expect(denied["replies"] == 50 && denied["denied_401"] == 50 && denied["allowed"] == 0)

            let key = try await client.createKey(name: "reader", permissions: ["jobs:read"]).secret
            let forbidden = try await load(["-c", "2", "-n", "40", "--key", key, "-p", "vault:read"], server: server)
            #expect(forbidden["replies"] == 40 && forbidden["denied_403"] == 40)

            let before = try await client.listKeys(pageSize: 1000).keys.count
            let created = try await load(["--rpc", "create", "-c", "2", "-n", "20"], server: server)
            #expect(created["replies"] == 20 && created["errors"] == 0)
            #expect(try await client.listKeys(pageSize: 1000).keys.count >= before + 20)
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: binary.path)))
    func refusesNonsenseSettings() async throws {
        let result = try await runCommand(Self.binary, ["load", "-c", "0", "--key", SecretFormat.standard.generate()])
        #expect(result.status != 0 && result.stderr.contains("positive"))
    }
}
