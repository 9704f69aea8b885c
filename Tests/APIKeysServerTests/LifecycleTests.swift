@testable import APIKeysClient
import APIKeysCore
import APIKeysServer
import APIKeysTestSupport
import Foundation
import NIOCore
import NIOPosix
import Testing

@Suite struct LifecycleTests {
    @Test func fullKeyLifecycleThroughTheClient() async throws {
        try await withServer { server, client in
            let created = try await client.createKey(
                name: "ci", permissions: ["jobs:read", "jobs:execute"], expiresAtMS: server.clock.nowMS() + 60_000)
            let id = created.key.id
            #expect(created.secret.hasPrefix("dbm_"))

            var answer = try await client.check(key: created.secret, permissions: ["jobs:read"], resource: "GET /jobs")
            #expect(
                answer.decision == .allow && answer.httpStatus == 200 && answer.keyID == id && answer.keyName == "ci")

            answer = try await client.check(key: created.secret, permissions: ["jobs:read", "vault:read"])
            #expect(answer.decision == .deny && answer.reason == .missingPermission && answer.httpStatus == 403)
            #expect(answer.missingPermissions == ["vault:read"])

            _ = try await client.setKeyEnabled(id: id, enabled: false)
            answer = try await client.check(key: created.secret)
            #expect(answer.reason == .disabled && answer.httpStatus == 401)

            _ = try await client.setKeyEnabled(id: id, enabled: true)
            #expect(try await client.check(key: created.secret).decision == .allow)

            let rotated = try await client.rotateKey(id: id)
            #expect(rotated.key.id == id && rotated.key.permissions == ["jobs:read", "jobs:execute"])
            #expect(try await client.check(key: created.secret).reason == .unknownKey)
            #expect(try await client.check(key: rotated.secret, permissions: ["jobs:execute"]).decision == .allow)

            let updated = try await client.updateKey(id: id, permissions: ["vault:read"])
            #expect(updated.permissions == ["vault:read"])
            #expect(
                try await client.check(key: rotated.secret, permissions: ["jobs:read"]).reason == .missingPermission)
            #expect(try await client.check(key: rotated.secret, permissions: ["vault:read"]).decision == .allow)

            server.clock.advance(byMS: 60_000)
            answer = try await client.check(key: rotated.secret, permissions: ["vault:read"])
            #expect(answer.reason == .expired && answer.httpStatus == 401)
            _ = try await client.updateKey(id: id, expiresAtMS: 0)
            #expect(try await client.check(key: rotated.secret).decision == .allow)

            try await client.deleteKey(id: id)
            answer = try await client.check(key: rotated.secret)
            #expect(answer.reason == .unknownKey && answer.httpStatus == 401)
            await #expect(throws: APIKeysClientError(code: .notFound, message: "no key with id \"\(id)\"")) {
                try await client.getKey(id: id)
            }

            await server.server.service.flushAuditTrail()
            let events = try await client.listAuditEvents(keyID: id, pageSize: 100).events
            let admin = events.filter { $0.trigger == "admin" }.map(\.action)
            #expect(
                admin == [
                    "key.deleted", "key.updated", "key.permissions_changed", "key.rotated", "key.enabled",
                    "key.disabled",
                    "key.created",
                ])
            #expect(events.filter { $0.trigger == "admin" }.allSatisfy { $0.actor == "bootstrap" })
            let api = events.filter { $0.action == "api.request" }
            #expect(api.count == 9)  // every check above but the two unknown-key ones, which name no key
            #expect(api.last?.resource == "GET /jobs" && api.last?.decision == .allow)
            #expect(api.contains { $0.decision == .deny && $0.reason == .expired })
        }
    }

    @Test func listPermissionsAndPagination() async throws {
        try await withServer { _, client in
            #expect(try await client.listPermissions().map(\.name) == PermissionCatalog.standard.entries.map(\.name))
            for index in 0..<5 { _ = try await client.createKey(name: "k\(index)", permissions: ["jobs:read"]) }
            let first = try await client.listKeys(pageSize: 3)
            #expect(first.keys.map(\.name) == ["k0", "k1", "k2"])
            let second = try await client.listKeys(pageSize: 3, pageToken: first.nextPageToken)
            #expect(second.keys.map(\.name) == ["k3", "k4"] && second.nextPageToken.isEmpty)
        }
    }

    @Test func everythingSurvivesARestartAndTheClientReconnects() async throws {
        let dir = try makeTemporaryDirectory("apikeyd-it")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clock = ManualWallClock(nowMS: Int64(Date().timeIntervalSince1970 * 1000))
        let first = try await TestServer.start(dataDirectory: dir, clock: clock)
        let token = first.adminToken
        let client = first.client()
        let created = try await client.createKey(name: "survivor", permissions: ["jobs:read"])
        #expect(try await client.check(key: created.secret).decision == .allow)
        await first.server.shutdown()
        await #expect(throws: APIKeysClientError.self) { try await client.getKey(id: created.key.id) }

        // The freed port may be held for a moment by another test's outgoing connection (an
        // ephemeral port): try again briefly rather than fail on a neighbour.
        var restarted: TestServer?
        for attempt in 1...50 where restarted == nil {
            do {
                restarted = try await TestServer.start(dataDirectory: dir, port: first.port, clock: clock)
            } catch let error as ServerError where error.code == .cannotListen && attempt < 50 {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let second = try #require(restarted)
        #expect(second.adminToken == token)  // the first token is not replaced
        let key = try await client.getKey(id: created.key.id)
        #expect(key.name == "survivor" && key.lastUsedAtMS > 0)
        #expect(try await client.check(key: created.secret, permissions: ["jobs:read"]).decision == .allow)
        await client.close()
        await second.server.shutdown()
    }

    /// Clients share NIO's singleton event loop group: fifty of them start no thread of their
    /// own (their connections run on the singleton's loops). Checked by identity, not by counting
    /// the process's threads, which the suites running in parallel change.
    @Test func clientsShareOneEventLoopGroup() async throws {
        try await withServer { server, _ in
            let shared = MultiThreadedEventLoopGroup.singleton
            let loops = shared.makeIterator().map { ObjectIdentifier($0) }
            var clients: [APIKeysClient] = []
            for _ in 0..<50 { clients.append(server.client()) }
            for other in clients {
                _ = try await other.listPermissions()
                #expect(other.connections.allSatisfy { $0.group === shared })
                let channel = try await other.connections[0].connectedChannel()
                #expect(loops.contains(ObjectIdentifier(channel.eventLoop)))
            }
            for other in clients { await other.close() }
        }
    }

    /// The scoped form closes its client however the body ends; a configuration without an
    /// endpoint is refused with a clear error, not a trap.
    @Test func aScopedClientIsClosedAndAnEmptyEndpointListIsRefused() async throws {
        try await withServer { server, _ in
            let configuration = server.client().configuration
            let channel = try await APIKeysClient.withClient(configuration: configuration) { client in
                #expect(try await client.listPermissions().count == 10)
                return try await client.connections[0].connectedChannel()
            }
            #expect(!channel.isActive, "the scoped client's connection is still open")
            struct Stop: Error {}
            var thrownChannel: (any Channel)?
            await #expect(throws: Stop.self) {
                try await APIKeysClient.withClient(configuration: configuration) { client in
                    thrownChannel = try await client.connections[0].connectedChannel()
                    throw Stop()
                }
            }
            #expect(thrownChannel?.isActive == false)
        }
        var empty = APIKeysClient.Configuration(port: 1)
        empty.endpoints = []
        let client = APIKeysClient(configuration: empty)
        await #expect {
            _ = try await client.listPermissions()
        } throws: {
            ($0 as? APIKeysClientError)?.code == .failedPrecondition
        }
        await client.close()
    }

    /// The catalog's texts are those of the product that defined the permissions, in its order.
    @Test func listPermissionsServesTheCatalog() async throws {
        try await withServer { _, client in
            let catalog = try await client.listPermissions().map { "\($0.name) \($0.description)" }
            #expect(
                catalog == [
                    "jobs:read List and view backup jobs", "jobs:write Create, edit, delete jobs",
                    "jobs:execute Trigger backup jobs", "history:read View execution history and poll status",
                    "sources:read List database sources", "destinations:read List storage destinations",
                    "storage:read Browse stored backups", "storage:write Delete stored backups",
                    "notifications:read List notification channels", "vault:read List encryption profiles",
                ])
        }
    }

    @Test func adminCallsNeedAValidAdminToken() async throws {
        try await withServer { server, client in
            let created = try await client.createKey(name: "k", permissions: ["jobs:read"])
            let anonymous = APIKeysClient(configuration: .init(port: server.port, adminToken: nil))
            let wrong = server.client(token: "adm_" + String(repeating: "A", count: 46))
            let apiKeyAsAdmin = server.client(token: created.secret)
            defer {
                Task {
                    await anonymous.close(); await wrong.close(); await apiKeyAsAdmin.close()
                }
            }
            for other in [anonymous, wrong, apiKeyAsAdmin] {
                await #expect { try await other.listKeys() } throws: { error in
                    (error as? APIKeysClientError)?.code == .unauthenticated
                }
            }
            // Check needs no admin token.
            #expect(try await anonymous.check(key: created.secret).decision == .allow)
        }
    }

    @Test func invalidArgumentsNameTheField() async throws {
        try await withServer { _, client in
            let cases: [(CreateKeyRequest, String)] = [
                (CreateKeyRequest(name: "  ", permissions: ["jobs:read"]), "name"),
                (CreateKeyRequest(name: String(repeating: "x", count: 101), permissions: ["jobs:read"]), "name"),
                (CreateKeyRequest(name: "tab\there", permissions: ["jobs:read"]), "name"),
                (CreateKeyRequest(name: "k", permissions: []), "permissions"),
                (CreateKeyRequest(name: "k", permissions: ["jobs:*"]), "permissions"),
                (CreateKeyRequest(name: "k", permissions: ["jobs:read"], expiresAtMS: 1), "expires_at_ms"),
            ]
            for (request, field) in cases {
                await #expect {
                    _ = try await client.createKey(
                        name: request.name, permissions: request.permissions, expiresAtMS: request.expiresAtMS)
                } throws: { error in
                    guard let error = error as? APIKeysClientError else { return false }
                    return error.code == .invalidArgument && error.message.hasPrefix(field)
                }
            }
            await #expect { try await client.listAuditEvents(action: "key.exploded") } throws: {
                ($0 as? APIKeysClientError)?.code == .invalidArgument
            }
            let keys = try await client.listKeys().keys
            #expect(keys.isEmpty)
        }
    }

    @Test func malformedKeysAreDeniedWithoutANetworkCall() async throws {
        // No server at all: the client answers a malformed key itself.
        let client = APIKeysClient(configuration: .init(port: 1))
        let answer = try await client.check(key: "dbm_short")
        #expect(answer.reason == .malformedKey && answer.httpStatus == 401)
        await client.close()
    }

    /// Without the client's deadline these calls would wait forever; the time limit turns a hang
    /// into a failure.
    @Test(.timeLimit(.minutes(1)))
    func aCallPastItsTimeoutFailsWithDeadlineExceeded() async throws {
        // A listener that accepts and never answers.
        let silent = try RawListener()
        let client = APIKeysClient(configuration: .init(port: silent.port, adminToken: "adm_x"))
        await #expect {
            _ = try await client.listPermissions(timeout: .milliseconds(200))
        } throws: {
            ($0 as? APIKeysClientError)?.code == .deadlineExceeded
        }
        do {
            _ = try await client.check(key: SecretFormat.standard.generate(), timeout: .milliseconds(100))
            Issue.record("a call to a silent server returned")
        } catch let error as APIKeysClientError {
            #expect(error.code == .deadlineExceeded)
        }
        await client.close()
    }
}
