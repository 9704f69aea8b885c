import APIKeysClient
import APIKeysTestSupport
import Foundation
import Testing

/// A second, independent client proves the wire contract: Python's official protobuf runtime,
/// compiling proto/, creates a key on the running server and checks it (Tests/interop/second_client.py).
@Suite(.enabled(if: interopPython != nil))
struct SecondClientTests {
    @Test func pythonClientCreatesAndChecksAKey() async throws {
        try await withServer { server, client in
            let work = try makeTemporaryDirectory("apikeys-py")
            defer { try? FileManager.default.removeItem(atPath: work) }
            let run = try await runCommand(
                interopPython!,
                [
                    repositoryRoot.appendingPathComponent("Tests/interop/second_client.py").path,
                    repositoryRoot.appendingPathComponent("proto").path, work, String(server.port), server.adminToken,
                ])
            #expect(run.status == 0, "\(run.stdout)\(run.stderr)")

            // What Python created is a real key, seen by the Swift client too.
            let keys = try await client.listKeys().keys
            #expect(keys.map(\.name) == ["python-client"])
        }
    }
}
