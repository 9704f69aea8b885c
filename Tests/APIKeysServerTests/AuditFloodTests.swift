import APIKeysClient
import APIKeysCore
import APIKeysServer
import APIKeysTestSupport
import Foundation
import Synchronization
import Testing

/// Checks of unknown keys with every field at its largest, from several connections, on a
/// 64 MiB tmpfs (CI runs as root): the trail grows by a bounded amount, a real key's checks are
/// allowed and audited throughout, and below the free-space minimum the noise is shed, said by
/// readiness, and never turns a real key's check into UNAVAILABLE.
@Suite(.enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/bin/mount")))
struct AuditFloodTests {
    /// Floods `server` with `checks` unknown-key checks from each of `connections` clients,
    /// while `real` is checked every 5 ms; returns the flood's check count and the real checks made.
    private func flood(_ server: TestServer, real: String, connections: Int, checks: Int) async throws
        -> (flood: Int, real: Int)
    {
        let floodDone = FinishedFlooders()
        let permissions = (0..<64).map { "p\($0):" + String(repeating: "x", count: 60) }
        let resource = "GET /" + String(repeating: "y", count: 1_100)
        return try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for index in 0..<connections {
                group.addTask {
                    let client = server.client()
                    defer { Task { await client.close() } }
                    var sent = 0
                    defer { floodDone.count() }
                    while sent < checks {
                        let answer = try await client.check(
                            key: server.server.service.format.generate(), permissions: permissions, resource: resource,
                            clientAddress: "2001:db8::\(index):\(sent % 7)")
                        #expect(answer.reason == .unknownKey)
                        sent += 1
                    }
                    return (sent, 0)
                }
            }
            group.addTask {
                let client = server.client()
                defer { Task { await client.close() } }
                var made = 0
                while floodDone.value < connections {
                    // Throws (and fails the test) on UNAVAILABLE.
                    let answer = try await client.check(key: real, permissions: ["jobs:read"], resource: "GET /real")
                    #expect(answer.decision == .allow)
                    made += 1
                    try await Task.sleep(for: .milliseconds(5))
                    server.clock.advance(byMS: 5)  // the sampler's seconds pass
                }
                return (0, made)
            }
            var total = (flood: 0, real: 0)
            for try await (sent, made) in group { total = (total.flood + sent, total.real + made) }
            return total
        }
    }

    /// Every api.request event stored, oldest last.
    private func requestEvents(_ client: APIKeysClient, keyID: String = "") async throws -> [AuditEvent] {
        var events: [AuditEvent] = []
        var token = ""
        repeat {
            let page = try await client.listAuditEvents(
                keyID: keyID, action: "api.request", pageSize: 1000, pageToken: token)
            events += page.events
            token = page.nextPageToken
        } while !token.isEmpty
        return events
    }

    @Test func aFloodOfUnknownKeysNeitherFillsTheDiskNorStopsRealKeys() async throws {
        let mountPoint = try makeTemporaryDirectory("apikeyd-tmpfs")
        let mounted = try await runCommand(
            URL(fileURLWithPath: "/bin/mount"), ["-t", "tmpfs", "-o", "size=64m", "tmpfs", mountPoint])
        try #require(mounted.status == 0, "\(mounted.stderr)")
        defer {
            _ = try? runCommand(URL(fileURLWithPath: "/bin/umount"), [mountPoint])
            try? FileManager.default.removeItem(atPath: mountPoint)
        }
        let dir = mountPoint + "/data"
        let server = try await TestServer.start(
            dataDirectory: dir, clock: ManualWallClock(nowMS: Int64(Date().timeIntervalSince1970 * 1000)),
            configure: { $0.minFreeDiskBytes = 32 << 20 })
        let client = server.client()
        let real = try await client.createKey(name: "real", permissions: ["jobs:read"])
        let startMS = server.clock.nowMS()

        let first = try await flood(server, real: real.secret, connections: 3, checks: 1_000)
        await server.server.service.flushAuditTrail()
        // One whole event per address and second at most, ten a second in all (~5.3 KB each), and
        // a count per address and second: what the trail keeps of the flood is bounded by the
        // seconds it lasted, not by its checks (one event each would have been ~5.3 KB × the flood).
        let seconds = Int(server.clock.nowMS() / 1000 - startMS / 1000) + 1  // the seconds it touched
        let noise = try await requestEvents(client).filter { $0.keyID.isEmpty }
        let stored = noise.reduce(0) { $0 + $1.resource.utf8.count + $1.permissions.joined().utf8.count + 100 }
        #expect(noise.filter { !$0.resource.isEmpty }.count <= 10 * seconds)
        #expect(stored < seconds * (10 * 5_500 + 101 * 200), "\(stored) bytes kept of \(first.flood) checks")
        let counted = noise.map { $0.resource.isEmpty ? Int($0.detail.prefix { $0.isNumber }) ?? 0 : 1 }.reduce(0, +)
        #expect(counted == first.flood, "the trail counts \(counted) of \(first.flood) checks")

        // Fill the disk to below the minimum: the noise is shed, readiness says so, real keys go on.
        let filler = mountPoint + "/filler"
        FileManager.default.createFile(atPath: filler, contents: Data(count: 36 << 20))
        try await Task.sleep(for: .milliseconds(1_500))  // the writer looks every second
        #expect(
            server.server.readinessProblem?.contains("below the minimum") == true,
            "\(server.server.readinessProblem ?? "ready")")
        let second = try await flood(server, real: real.secret, connections: 3, checks: 300)
        #expect(server.server.service.auditDisk.shedUnknownKeyChecks > 0)
        await server.server.service.flushAuditTrail()

        // Every real check is in the trail.
        let audited = try await requestEvents(client, keyID: real.key.id).count
        #expect(audited == first.real + second.real)
        try FileManager.default.removeItem(atPath: filler)
        await client.close()
        await server.server.shutdown()
    }
}

/// Counts the flooding tasks that have finished.
private final class FinishedFlooders: Sendable {
    private let finished = Mutex(0)
    func count() { finished.withLock { $0 += 1 } }
    var value: Int { finished.withLock { $0 } }
}
