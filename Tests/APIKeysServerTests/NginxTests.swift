import APIKeysClient
import APIKeysCore
import APIKeysHTTP
import APIKeysServer
import APIKeysTestSupport
import Foundation
import Logging
import Testing

/// Forward-auth through a real nginx (Debian's nginx-light, `auth_request`) in front of a small
/// upstream, with the configuration in Tests/nginx/nginx.conf.template (the one README shows).
@Suite(.enabled(if: FileManager.default.isExecutableFile(atPath: nginxPath)))
struct NginxTests {
    static let nginx = nginxPath

    /// The ports of the nginx in front of apikeyd's HTTP port, and of the second nginx in front of it.
    struct Proxies {
        let nginx: Int
        let front: Int
    }

    /// Runs `body` with a server, its HTTP port, the upstream and nginx (Tests/nginx), all stopped after.
    private func withNginx(
        routes: String, clientAddress: ClientAddressPolicy = .init(),
        _ body: (TestServer, APIKeysClient, Proxies, _ errorLog: String) async throws -> Void
    ) async throws {
        let metrics = HTTPFrontend.makeMetrics()
        try await withServer(configure: { $0.metricsFactory = metrics.factory }) { server, client in
            var logger = Logger(label: "apikeyd-nginx-test")
            logger.logLevel = .critical
            let http = try await HTTPFrontend.start(
                server: server.server, metrics: metrics,
                forwardAuth: ForwardAuthOptions(
                    routes: try RouteTable(parsing: routes, catalog: .standard), clientAddress: clientAddress),
                host: "127.0.0.1", port: 0, logger: logger)
            let dir = try makeTemporaryDirectory("apikeyd-nginx")
            let upstream = try Self.startUpstream()
            let ports = Proxies(nginx: try freePort(), front: try freePort())
            let proxy = try Self.startNginx(
                in: dir, port: ports.nginx, front: ports.front, apikeyd: http.port, upstream: upstream.port)
            defer {
                proxy.terminate()
                proxy.waitUntilExit()
                // SIGKILL: a child of this process may inherit an ignored SIGTERM.
                kill(upstream.process.processIdentifier, SIGKILL)
                upstream.process.waitUntilExit()
                try? FileManager.default.removeItem(atPath: dir)
            }
            do {
                try await body(server, client, ports, dir + "/error.log")
            } catch {
                await http.stop()
                throw error
            }
            await http.stop()
        }
    }

    @Test func nginxAsksApikeydAtEveryRequest() async throws {
        try await withNginx(routes: "POST /api/jobs/*/run jobs:execute\nGET /api/jobs/** jobs:read\n") {
            server, client, ports, errorLog in
            let nginxPort = ports.nginx
            let reader = try await client.createKey(name: "reader", permissions: ["jobs:read"])
            let runner = try await client.createKey(name: "runner", permissions: ["jobs:read", "jobs:execute"])
            func through(_ method: String, _ path: String, key: String?) async throws -> HTTPProbe.Reply {
                try await HTTPProbe.request(
                    port: nginxPort, method: method, path: path,
                    headers: key.map { ["Authorization": "Bearer \($0)"] } ?? [:])
            }
            #expect(try await through("GET", "/api/jobs/1", key: nil).status == 401)
            let read = try await through("GET", "/api/jobs/1", key: reader.secret)
            #expect(read.status == 200 && read.body == "upstream saw GET /api/jobs/1 key=\(reader.key.id)\n", "\(read)")
            #expect(try await through("POST", "/api/jobs/1/run", key: reader.secret).status == 403)
            #expect(try await through("POST", "/api/jobs/1/run?at=now", key: runner.secret).status == 200)

            // A disable or a rotation holds at the next request through nginx.
            _ = try await client.setKeyEnabled(id: reader.key.id, enabled: false)
            #expect(try await through("GET", "/api/jobs/1", key: reader.secret).status == 401)
            let rotated = try await client.rotateKey(id: runner.key.id)
            #expect(try await through("GET", "/api/jobs/2", key: runner.secret).status == 401)
            #expect(try await through("GET", "/api/jobs/2", key: rotated.secret).status == 200)

            // A rate-limited check reaches the client as 429 with its Retry-After: apikeyd answers
            // nginx 403 (X-Rate-Limited-Status), which auth_request passes on, and the
            // configuration maps it back; a bare 429 would have become nginx's own 500.
            let limited = try await client.createKey(
                name: "limited", permissions: ["jobs:read"], rateLimit: RateLimit(requests: 2, periodSeconds: 60))
            #expect(try await through("GET", "/api/jobs/3", key: limited.secret).status == 200)
            #expect(try await through("GET", "/api/jobs/3", key: limited.secret).status == 200)
            let refused = try await through("GET", "/api/jobs/3", key: limited.secret)
            #expect(refused.status == 429 && refused.headers["retry-after"] == "30", "\(refused)")
            let errors = (try? String(contentsOfFile: errorLog, encoding: .utf8)) ?? ""
            #expect(!errors.contains("unexpected status"), "\(errors)")

            // The audit trail has the original requests, as nginx received them.
            await server.server.service.flushAuditTrail()
            let resources = try await client.listAuditEvents(action: "api.request").events
                .map(\.resource)
            #expect(
                resources.contains("POST /api/jobs/1/run?at=now") && resources.contains("GET /api/jobs/2"),
                "\(resources)")
        }
    }

    /// nginx appends to X-Forwarded-For (`$proxy_add_x_forwarded_for`): a client's forged entry
    /// stays in the header, left of the address nginx saw. With nginx (127.0.0.1) the only trusted
    /// proxy, a client on 127.0.0.2 is judged by 127.0.0.2 directly, through two chained nginx
    /// servers, and whatever it writes into X-Forwarded-For; a route's decision holds whatever
    /// X-Required-Permissions it sends, and a path spelled to slip past a route is refused.
    @Test func clientsCannotTalkTheirWayPastNginx() async throws {
        try await withNginx(
            routes:
                "GET /api/jobs/*/secrets vault:read\nGET /api/jobs/** jobs:read\nPOST /api/jobs/*/run jobs:execute\n",
            clientAddress: ClientAddressPolicy(trustedProxies: [IPNetwork("127.0.0.1/32")!])
        ) { server, client, ports, _ in
            let (nginxPort, frontPort) = (ports.nginx, ports.front)
            let fenced = try await client.createKey(
                name: "fenced", permissions: ["jobs:read"], allowedNetworks: ["10.0.0.0/8"])
            let local = try await client.createKey(
                name: "local", permissions: ["jobs:read"], allowedNetworks: ["127.0.0.2/32"])
            func through(
                _ port: Int, _ path: String, method: String = "GET", key: String, _ headers: [String: String] = [:]
            ) async throws -> HTTPProbe.Reply {
                try await HTTPProbe.request(
                    port: port, method: method, path: path,
                    headers: headers.merging(["Authorization": "Bearer \(key)"]) { $1 }, source: "127.0.0.2")
            }
            for port in [nginxPort, frontPort] {
                let forged = try await through(port, "/api/jobs/1", key: fenced.secret, ["X-Forwarded-For": "10.1.2.3"])
                #expect(forged.status == 403, "a forged X-Forwarded-For was believed (port \(port)): \(forged)")
                #expect(try await through(port, "/api/jobs/1", key: fenced.secret).status == 403)
                #expect(try await through(port, "/api/jobs/1", key: local.secret).status == 200)
                let spoofed = try await through(port, "/api/jobs/1", key: local.secret, ["X-Forwarded-For": "10.1.2.3"])
                #expect(spoofed.status == 200, "the real client was not judged by its own address: \(spoofed)")
            }
            await server.server.service.flushAuditTrail()
            let denied = try await client.listAuditEvents(keyID: fenced.key.id).events
                .filter { $0.reason == .ipNotAllowed }
            #expect(!denied.isEmpty && denied.allSatisfy { $0.clientAddress == "127.0.0.2" }, "\(denied)")

            // A route decides; the client's X-Required-Permissions changes nothing.
            for header in ["jobs:read", ",", "", "history:read"] {
                let run = try await through(
                    nginxPort, "/api/jobs/42/run", method: "POST", key: local.secret, ["X-Required-Permissions": header]
                )
                #expect(run.status == 403, "X-Required-Permissions \"\(header)\" changed the decision: \(run)")
            }
            // Spellings of /api/jobs/1/secrets that an upstream serves as it: never allowed by the
            // wider jobs:read route (403 as the path itself, or nginx's or apikeyd's 400).
            for path in [
                "/api/jobs/1/secrets", "/api/jobs/1/%73ecrets", "/api/jobs/1/./secrets", "/api/jobs/x/../1/secrets",
                "/api/jobs/1/secrets;x", "/api/jobs/1/secrets%2F", "/api/jobs/1/%2e%2e/1/secrets",
                "/api/jobs//1/secrets",
                "/api/jobs/1%2fsecrets", "/api/jobs/1/%C0%AEsecrets",
            ] {
                let reply = try await through(nginxPort, path, key: local.secret)
                #expect([400, 403].contains(reply.status), "\(path) was \(reply.status)")
            }
            #expect(try await through(nginxPort, "/api/jobs/1/logs", key: local.secret).status == 200)
        }
    }

    private static func startUpstream() throws -> (process: ChildProcess, port: Int) {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [repositoryRoot.appendingPathComponent("Tests/nginx/upstream.py").path]
        let out = privatePipe()
        process.standardOutput = out
        // Not this process's outputs: a child left holding them would keep `swift test` waiting.
        process.standardError = FileHandle.nullDevice
        try process.run()
        let line = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard let port = Int(line.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            kill(process.processIdentifier, SIGKILL)
            throw POSIXError(.EIO)
        }
        return (process, port)
    }

    private static func startNginx(in dir: String, port: Int, front: Int, apikeyd: Int, upstream: Int) throws -> ChildProcess
    {
        try FileManager.default.createDirectory(atPath: dir + "/tmp", withIntermediateDirectories: true)
        let template = try String(
            contentsOf: repositoryRoot.appendingPathComponent("Tests/nginx/nginx.conf.template"), encoding: .utf8)
        let config = template.replacingOccurrences(of: "DIR", with: dir)
            .replacingOccurrences(of: "NGINX_PORT", with: String(port))
            .replacingOccurrences(of: "FRONT_PORT", with: String(front))
            .replacingOccurrences(of: "APIKEYD_HTTP_PORT", with: String(apikeyd))
            .replacingOccurrences(of: "UPSTREAM_PORT", with: String(upstream))
        try config.write(toFile: dir + "/nginx.conf", atomically: true, encoding: .utf8)
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: nginx)
        process.arguments = ["-p", dir, "-e", dir + "/error.log", "-c", dir + "/nginx.conf", "-g", "daemon off;"]
        process.standardError = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        for _ in 0..<100 {
            if (try? HTTPProbe.requestBlocking(port: port, method: "GET", path: "/", headers: [:])) != nil {
                return process
            }
            usleep(50_000)
        }
        process.terminate()
        let log = (try? String(contentsOfFile: dir + "/error.log", encoding: .utf8)) ?? ""
        throw CocoaError(.fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: "nginx did not start: \(log)"])
    }
}

/// Debian's nginx (`make deps` installs nginx-light).
let nginxPath = "/usr/sbin/nginx"

/// A port nothing listens on now (the kernel's pick, released at once).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
            guard bind(fd, pointer, length) == 0 else { return -1 }
            return getsockname(fd, pointer, &length)
        }
    }
    guard bound == 0 else { throw POSIXError(.EADDRNOTAVAIL) }
    return Int(UInt16(bigEndian: address.sin_port))
}
