import APIKeysCore
import APIKeysServer
import APIKeysTestSupport
import Foundation
import Testing

/// A server that cannot start says why, in terms an operator can act on, and leaves nothing running.
@Suite struct StartupTests {
    let clock = ManualWallClock(nowMS: 1_700_000_000_000)

    @Test func dataDirectoryThatIsAFileIsRefused() async throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/not-a-directory"
        try Data().write(to: URL(fileURLWithPath: file))
        await #expect(throws: ServerError.dataDirectory(path: file, reason: "it is not a directory")) {
            _ = try await TestServer.start(dataDirectory: file, clock: clock)
        }
    }

    @Test func portInUseIsRefusedAndTheStoreIsClosed() async throws {
        try await withServer { server, _ in
            let dir = try makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            await #expect(
                throws: ServerError.cannotListen(host: "127.0.0.1", port: server.port, reason: "Address already in use")
            ) {
                _ = try await TestServer.start(dataDirectory: dir, port: server.port, clock: clock)
            }
            // The failed start closed its database: another start on the same directory works.
            let second = try await TestServer.start(dataDirectory: dir, clock: clock)
            await second.server.shutdown()
        }
    }

    @Test func aSecondServerOnTheSameDataDirectoryIsRefused() async throws {
        try await withServer { server, _ in
            await #expect(throws: ServerError.dataDirectoryInUse(path: server.dataDirectory, holderPID: getpid())) {
                _ = try await TestServer.start(dataDirectory: server.dataDirectory, clock: clock)
            }
            // The refused start left the running server's lock alone.
            await #expect(throws: ServerError.self) {
                _ = try await TestServer.start(dataDirectory: server.dataDirectory, clock: clock)
            }
            await server.server.shutdown()
            // Once it stopped, the directory is free again.
            let next = try await TestServer.start(dataDirectory: server.dataDirectory, clock: clock)
            await next.server.shutdown()
        }
    }
}
