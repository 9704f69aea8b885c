import APIKeysClient
import APIKeysCore
import APIKeysServer
import APIKeysTestSupport
import Foundation
import Logging

/// A real server on 127.0.0.1, port 0, with a temporary data directory.
struct TestServer {
    let server: APIKeysServer
    let dataDirectory: String
    let clock: ManualWallClock

    var port: Int { server.port }
    var adminToken: String {
        (try? String(contentsOfFile: dataDirectory + "/admin.token", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }

    static func start(
        dataDirectory: String, port: Int = 0, clock: ManualWallClock,
        configure: (inout ServerConfiguration) -> Void = { _ in }
    ) async throws -> TestServer {
        var configuration = ServerConfiguration()
        configuration.port = port
        configuration.dataDirectory = dataDirectory
        configuration.clock = clock
        configure(&configuration)
        var logger = Logger(label: "apikeyd-test")
        logger.logLevel = .critical
        let server = try await APIKeysServer.start(configuration: configuration, logger: logger)
        return TestServer(server: server, dataDirectory: dataDirectory, clock: clock)
    }

    func client(token: String? = nil, timeout: Duration = .seconds(10)) -> APIKeysClient {
        APIKeysClient(configuration: .init(port: port, adminToken: token ?? adminToken, timeout: timeout))
    }
}

/// Runs `body` with a started server and an authenticated client; both are closed afterwards.
func withServer<R>(
    clock: ManualWallClock = ManualWallClock(nowMS: Int64(Date().timeIntervalSince1970 * 1000)),
    configure: (inout ServerConfiguration) -> Void = { _ in },
    _ body: (TestServer, APIKeysClient) async throws -> R
) async throws -> R {
    let dir = try makeTemporaryDirectory("apikeyd-it")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let server = try await TestServer.start(dataDirectory: dir, clock: clock, configure: configure)
    let client = server.client()
    do {
        let result = try await body(server, client)
        await client.close()
        await server.server.shutdown()
        return result
    } catch {
        await client.close()
        await server.server.shutdown()
        throw error
    }
}
