import APIKeysClient
import Foundation
import Testing

/// A second, independent client proves the wire contract: Python's official protobuf runtime,
/// compiling proto/, creates a key on the running server and checks it (Tests/interop/second_client.py).
@Suite(.enabled(if: ProcessInfo.processInfo.environment["APIKEYS_INTEROP_PYTHON"] != nil))
struct SecondClientTests {
    @Test func pythonClientCreatesAndChecksAKey() async throws {
        try await withServer { server, client in
            let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent()
            let work = FileManager.default.temporaryDirectory.appendingPathComponent("apikeys-py-\(UUID())")
            defer { try? FileManager.default.removeItem(at: work) }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: ProcessInfo.processInfo.environment["APIKEYS_INTEROP_PYTHON"]!)
            process.arguments = [
                repo.appendingPathComponent("Tests/interop/second_client.py").path,
                repo.appendingPathComponent("proto").path, work.path, String(server.port), server.adminToken,
            ]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            try process.run()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "\(text)")

            // What Python created is a real key, seen by the Swift client too.
            let keys = try await client.listKeys().keys
            #expect(keys.map(\.name) == ["python-client"])
        }
    }
}
