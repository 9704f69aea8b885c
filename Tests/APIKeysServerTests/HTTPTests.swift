import APIKeysClient
import APIKeysCore
@testable import APIKeysHTTP
import APIKeysServer
@testable import APIKeysSQLite
@_spi(Testing) import APIKeysStore
import APIKeysTestSupport
import Dispatch
import Foundation
import Logging
import Synchronization
import Testing

/// The HTTP port: health and readiness, Prometheus metrics, forward-auth, through real HTTP on
/// 127.0.0.1.
@Suite struct HTTPTests {
    private func withHTTP(
        routes: String? = nil, proxy: ProxyKind = .nginx, trustedProxies: [IPNetwork] = ClientAddressPolicy.loopback,
        forwardedHeader: ClientAddressPolicy.Header = .xForwardedFor, idleTimeout: Duration = .seconds(75),
        maxConnections: Int = HTTPFrontend.defaultMaxConnections, valve: AuditSinkValve? = nil,
        _ body: (TestServer, HTTPFrontend, APIKeysClient) async throws -> Void
    ) async throws {
        let metrics = HTTPFrontend.makeMetrics()
        try await withServer(configure: {
            $0.metricsFactory = metrics.factory
            $0.decorateAuditSink = valve?.decorator
        }) { server, client in
            var logger = Logger(label: "apikeyd-http-test")
            logger.logLevel = .critical
            let table = try routes.map { try RouteTable(parsing: $0, catalog: .standard) }
            let http = try await HTTPFrontend.start(
                server: server.server, metrics: metrics,
                forwardAuth: ForwardAuthOptions(
                    routes: table,
                    clientAddress: ClientAddressPolicy(trustedProxies: trustedProxies, header: forwardedHeader),
                    proxy: proxy),
                host: "127.0.0.1", port: 0, idleTimeout: idleTimeout, maxConnections: maxConnections, logger: logger)
            do {
                try await body(server, http, client)
            } catch {
                await http.stop()
                throw error
            }
            await http.stop()
        }
    }

    @Test func aTakenPortIsRefusedAndTheRunningPortServesOn() async throws {
        try await withHTTP { server, http, _ in
            var logger = Logger(label: "apikeyd-http-test")
            logger.logLevel = .critical
            // Each failed start shuts its own loops down with nothing left scheduled on them (in
            // SwiftNIO's strict mode, which the test runner sets, anything left would crash).
            for _ in 0..<3 {
                do {
                    let second = try await HTTPFrontend.start(
                        server: server.server, metrics: nil, host: "127.0.0.1", port: http.port, logger: logger)
                    await second.stop()
                    Issue.record("a second HTTP port started on \(http.port)")
                } catch let error as HTTPFrontendError {
                    #expect(error.description == "cannot listen: Address already in use")
                }
            }
            #expect(try await HTTPProbe.request(port: http.port, path: "/healthz").status == 200)
        }
    }

    @Test func healthAndReadinessFollowTheAuditWriter() async throws {
        let valve = AuditSinkValve()
        try await withHTTP(valve: valve) { server, http, client in
            #expect(try await HTTPProbe.request(port: http.port, path: "/healthz").status == 200)
            #expect(try await HTTPProbe.request(port: http.port, path: "/readyz").status == 200)
            let created = try await client.createKey(name: "k", permissions: ["jobs:read"])
            // A writer that commits nothing while events wait: not ready after the stall limit (2 s).
            valve.hold()
            _ = try await client.check(key: created.secret)
            var ready = try await HTTPProbe.request(port: http.port, path: "/readyz")
            for _ in 0..<40 where ready.status == 200 {
                try await Task.sleep(for: .milliseconds(100))
                ready = try await HTTPProbe.request(port: http.port, path: "/readyz")
            }
            #expect(ready.status == 503 && ready.body.contains("audit writer"), "\(ready)")
            #expect(try await HTTPProbe.request(port: http.port, path: "/healthz").status == 200)
            valve.release()
            await server.server.service.flushAuditTrail()
            #expect(try await HTTPProbe.request(port: http.port, path: "/readyz").status == 200)
        }
    }

    /// Forward-auth checks made on every event loop of the port at once are each counted once:
    /// each loop counts its own in a tally of its own, which has one writer (a tally shared by
    /// two loops loses counts, or is added up twice). Pipelined on 8 connections, spread over the
    /// port's loops (one per core, as configured by default).
    @Test func checksOnEveryLoopAtOnceAreCountedExactly() async throws {
        try await withHTTP { server, http, client in
            let created = try await client.createKey(name: "k", permissions: ["jobs:read"])
            let (connections, requests) = (8, 500)
            let request = "GET /authorize HTTP/1.1\r\nHost: x\r\nX-API-Key: \(created.secret)\r\nX-Original-URI: /x\r\n"
            let bytes = Array(
                (String(repeating: request + "\r\n", count: requests - 1) + request + "Connection: close\r\n\r\n").utf8)
            let allowed = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<connections {
                    group.addTask {
                        try await offThePool {
                            let connection = try RawConnection(port: http.port, receiveTimeoutSeconds: 20)
                            connection.send(bytes)
                            let text = String(decoding: connection.receiveToEnd(), as: UTF8.self)
                            return text.components(separatedBy: "HTTP/1.1 200 OK\r\n").count - 1
                        }
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(allowed == connections * requests)
            let text = try await HTTPProbe.request(port: http.port, path: "/metrics").body
            let lines = Set(text.split(separator: "\n").map(String.init))
            let counted = lines.filter {
                $0.hasPrefix("apikeyd_checks_total{decision=\"allow\"")
                    || $0.hasPrefix("apikeyd_check_duration_seconds_count")
            }
            #expect(
                lines.contains(#"apikeyd_checks_total{decision="allow",reason="none"} \#(connections * requests)"#),
                "\(counted.sorted())")
            #expect(
                lines.contains("apikeyd_check_duration_seconds_count \(connections * requests)"), "\(counted.sorted())")
        }
    }

    @Test func metricsMoveWithChecksAndAdminCalls() async throws {
        try await withHTTP { server, http, client in
            let created = try await client.createKey(name: "k", permissions: ["jobs:read"])
            _ = try await client.check(key: created.secret, permissions: ["jobs:read"])
            _ = try await client.check(key: created.secret, permissions: ["jobs:read"])
            _ = try await client.check(key: created.secret, permissions: ["vault:read"])
            await #expect(throws: APIKeysClientError.self) { _ = try await client.getKey(id: "key_nope") }
            // A forward-auth check is counted with the RPC ones.
            let forwarded = try await HTTPProbe.request(
                port: http.port, path: "/authorize", headers: ["X-API-Key": created.secret, "X-Original-URI": "/x"])
            #expect(forwarded.status == 200)
            await server.server.service.flushAuditTrail()
            // Scraped twice: counts are added to the registry once.
            _ = try await HTTPProbe.request(port: http.port, path: "/metrics")
            let text = try await HTTPProbe.request(port: http.port, path: "/metrics").body
            let lines = Set(text.split(separator: "\n").map(String.init))
            #expect(lines.contains(#"apikeyd_checks_total{decision="allow",reason="none"} 3"#), "\(text)")
            #expect(lines.contains(#"apikeyd_checks_total{decision="deny",reason="missing_permission"} 1"#))
            #expect(lines.contains(#"apikeyd_admin_calls_total{method="CreateKey",status="OK"} 1"#))
            #expect(lines.contains(#"apikeyd_admin_calls_total{method="GetKey",status="NOT_FOUND"} 1"#))
            #expect(lines.contains(#"apikeyd_check_duration_seconds_count 4"#))
            #expect(lines.contains(#"apikeyd_check_duration_seconds_bucket{le="+Inf"} 4"#))
            #expect(lines.contains(#"apikeyd_check_duration_seconds_bucket{le="1.0"} 4"#))
            // Gauges are printed as floating point numbers.
            #expect(lines.contains("apikeyd_keys 1.0") && lines.contains("apikeyd_connections_open 1.0"))
            #expect(
                lines.contains("apikeyd_audit_events_written_total 4")
                    && lines.contains("apikeyd_audit_queue_depth 0.0"))
            #expect(lines.contains(#"apikeyd_build_info{version="\#(BuildInfo.version)"} 1.0"#))
            // The official Prometheus parser reads all of it (under `make test`, which sets the
            // interop Python; without it this test fails rather than drop the check).
            let python = try #require(interopPython, "APIKEYS_INTEROP_PYTHON is not set")
            do {
                let file = try makeTemporaryDirectory("apikeyd-metrics") + "/metrics.txt"
                try text.write(toFile: file, atomically: true, encoding: .utf8)
                let run = try await runCommand(
                    python,
                    [
                        "-c",
                        "import sys; from prometheus_client.parser import text_string_to_metric_families as p; "
                            + "print(len(list(p(open(sys.argv[1]).read()))))", file,
                    ])
                #expect(
                    run.status == 0 && Int(run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 >= 7,
                    "\(run.stderr)")
            }
        }
    }

    /// At `--max-http-connections`, a new connection takes the slot of the oldest idle one, or of
    /// the request that began first and is still incomplete (a flood of silent or slow
    /// connections does not keep a probe out); a connection whose complete request is being
    /// answered never gives way (ConnectionLimitsTests shows it on the RPC port, same table). The
    /// RPC port serves throughout.
    @Test func theHTTPPortHoldsAtMostItsLimitOfConnections() async throws {
        try await withHTTP(maxConnections: 20) { server, http, client in
            let key = try await client.createKey(name: "k", permissions: ["jobs:read"])
            // 20 silent connections fill the port; a probe still gets in, and the oldest silent
            // one is closed for it.
            var silent: [RawConnection] = []
            for _ in 0..<20 { silent.append(try RawConnection(port: http.port, receiveTimeoutSeconds: 2)) }
            try await Self.waitUntil { http.openConnections.all == 20 }
            for _ in 0..<3 {
                #expect(try await HTTPProbe.request(port: http.port, path: "/healthz").status == 200)
            }
            // The first probe's slot came from a silent connection (which one depends on the order
            // the event loops accepted them in); each later probe had the slot the one before
            // freed when it closed. So one or more silent connections were closed, never all.
            try await Self.waitUntil { silent.contains { $0.isClosedByPeer(waitingMS: 0) } }
            #expect(http.openConnections.all <= 20)
            #expect(silent.filter { $0.isClosedByPeer(waitingMS: 0) }.count <= 3)
            silent.removeAll()
            try await Self.waitUntil { http.openConnections.all == 0 }

            // 20 connections each in the middle of a request (headers never ended, a slowloris):
            // a new one is served, and the one whose request began first gives way.
            var slow: [RawConnection] = []
            for _ in 0..<20 {
                let connection = try RawConnection(port: http.port, receiveTimeoutSeconds: 2)
                connection.send(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n".utf8))  // no end of headers
                slow.append(connection)
                try await Self.waitUntil { http.openConnections.busy == slow.count }
            }
            try await Self.waitUntil { http.openConnections.all == 20 && http.openConnections.busy == 20 }
            #expect(try await HTTPProbe.request(port: http.port, path: "/healthz").status == 200)
            #expect(slow[0].isClosedByPeer(waitingMS: 2000), "the oldest incomplete request kept its slot")
            #expect(slow.dropFirst().allSatisfy { !$0.isClosedByPeer(waitingMS: 0) })
            #expect(try await client.check(key: key.secret, permissions: ["jobs:read"]).decision == .allow)
            slow.removeAll()
            try await Self.waitUntil { http.openConnections.all == 0 }
            #expect(try await HTTPProbe.request(port: http.port, path: "/healthz").status == 200)
        }
    }

    /// Polls `condition` every 20 ms; records an issue if it does not hold within 5 s.
    static func waitUntil(_ condition: () -> Bool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while !condition() {
            guard ContinuousClock.now < deadline else {
                Issue.record("condition not met within 5 s", sourceLocation: sourceLocation)
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test func forwardAuthDecidesAsCheckAndIsAudited() async throws {
        try await withHTTP { server, http, client in
            let created = try await client.createKey(name: "ci", permissions: ["jobs:execute"])
            let nginx = ["X-Original-Method": "POST", "X-Original-URI": "/api/jobs/42/run?now=1"]
            var reply = try await HTTPProbe.request(port: http.port, path: "/authorize", headers: nginx)
            #expect(reply.status == 401 && reply.headers["www-authenticate"] == #"Bearer realm="apikeyd""#)

            reply = try await HTTPProbe.request(
                port: http.port, path: "/authorize",
                headers: nginx.merging(
                    [
                        "Authorization": "Bearer \(created.secret)",
                        "X-Required-Permissions": "jobs:execute, history:read",
                    ]
                ) { $1 })
            #expect(reply.status == 403 && reply.body.contains(#""missing_permissions":["history:read"]"#), "\(reply)")
            #expect(
                reply.headers["www-authenticate"]?.contains(#"error="insufficient_scope", scope="history:read""#)
                    == true)

            reply = try await HTTPProbe.request(
                port: http.port, path: "/authorize",
                headers: nginx.merging([
                    "X-API-Key": created.secret, "X-Required-Permissions": "jobs:execute",
                    "X-Forwarded-For": "10.1.2.3, 10.0.0.1",
                ]) { $1 })
            #expect(
                reply.status == 200 && reply.headers["x-key-id"] == created.key.id
                    && reply.headers["x-key-name"] == "ci")

            _ = try await client.setKeyEnabled(id: created.key.id, enabled: false)
            reply = try await HTTPProbe.request(
                port: http.port, path: "/authorize", headers: nginx.merging(["X-API-Key": created.secret]) { $1 })
            #expect(reply.status == 401 && reply.body.contains(#""reason":"DISABLED""#), "\(reply)")

            // The same audit events as the RPC Check: the original request as the resource.
            await server.server.service.flushAuditTrail()
            let events = try await client.listAuditEvents(action: "api.request").events
            #expect(events.count == 3 && events.allSatisfy { $0.resource == "POST /api/jobs/42/run?now=1" })
            // The peer (127.0.0.1) is a trusted proxy: the address it appended, the rightmost
            // untrusted one, is the client's; what the client wrote before it is not believed.
            #expect(events.contains { $0.clientAddress == "10.0.0.1" && $0.decision == .allow })
        }
    }

    /// One keep-alive connection, as a proxy's is: every allowed answer names the key of its own
    /// request, whatever the answers before it named (a connection's last allowed response is
    /// written again only for the same key state), a key disabled meanwhile is refused at once,
    /// and each answer says what its request asked of the connection.
    @Test func allowedAnswersOnOneConnectionEachNameTheirOwnKey() async throws {
        try await withHTTP { _, http, client in
            let first = try await client.createKey(name: "first", permissions: ["jobs:read"])
            let second = try await client.createKey(name: "café", permissions: ["jobs:read"])
            let connection = try RawConnection(port: http.port)
            // The head, and the body after it (none for HEAD).
            func ask(_ request: String) -> String {
                connection.send(Array(request.utf8))
                var head = ""
                while !head.hasSuffix("\r\n\r\n"), let more = connection.receive(1) {
                    head += String(decoding: more, as: UTF8.self)
                }
                let length = head.split(separator: "\r\n").first { $0.hasPrefix("Content-Length: ") }
                    .flatMap { Int($0.dropFirst("Content-Length: ".count)) }
                guard !request.hasPrefix("HEAD "), let length, length > 0, let body = connection.receive(length)
                else { return head }
                return head + String(decoding: body, as: UTF8.self)
            }
            func allowed(_ head: String, id: String, name: String) -> Bool {
                head.hasPrefix("HTTP/1.1 200 OK\r\n") && head.contains("\r\nX-Key-Id: \(id)\r\n")
                    && head.contains("\r\nX-Key-Name: \(name)\r\n") && head.contains("\r\nContent-Length: 0\r\n")
            }
            let byFirst = "GET /authorize/api/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(first.secret)\r\n"
            var head = ask(byFirst + "\r\n")
            #expect(allowed(head, id: first.key.id, name: "first"), "\(head)")
            head = ask(byFirst + "\r\n")
            #expect(allowed(head, id: first.key.id, name: "first"), "\(head)")

            _ = try await client.updateKey(id: first.key.id, name: "renamed")
            head = ask(byFirst + "\r\n")
            #expect(allowed(head, id: first.key.id, name: "renamed"), "\(head)")

            head = ask("HEAD /authorize/api/x HTTP/1.1\r\nHost: x\r\nX-API-Key: \(second.secret)\r\n\r\n")
            #expect(allowed(head, id: second.key.id, name: "caf%C3%A9"), "\(head)")

            head = ask("GET /authorize/api/x HTTP/1.0\r\nConnection: keep-alive\r\nX-API-Key: \(second.secret)\r\n\r\n")
            #expect(allowed(head, id: second.key.id, name: "caf%C3%A9"), "\(head)")
            #expect(head.contains("\r\nConnection: keep-alive\r\n"), "\(head)")

            // Disabled while the connection remembers its secret and its answer: refused at once.
            _ = try await client.setKeyEnabled(id: first.key.id, enabled: false)
            head = ask(byFirst + "\r\n")
            #expect(head.hasPrefix("HTTP/1.1 401 ") && head.contains(#""reason":"DISABLED""#), "\(head)")
            _ = try await client.setKeyEnabled(id: first.key.id, enabled: true)

            head = ask(byFirst + "Connection: close\r\n\r\n")
            #expect(allowed(head, id: first.key.id, name: "renamed"), "\(head)")
            #expect(head.contains("\r\nConnection: close\r\n") && connection.isClosedByPeer(waitingMS: 5000), "\(head)")
        }
    }

    /// A key with an allowlist, through the RPC Check and through forward-auth: the end client's
    /// address (X-Forwarded-For, else the peer) decides; outside it, 403 IP_NOT_ALLOWED.
    @Test func anAllowlistHoldsOnBothPorts() async throws {
        try await withHTTP { server, http, client in
            let fenced = try await client.createKey(
                name: "fenced", permissions: ["jobs:read"], allowedNetworks: ["10.0.0.0/8"])
            #expect(fenced.key.allowedNetworks == ["10.0.0.0/8"])
            let inside = try await client.check(
                key: fenced.secret, permissions: ["jobs:read"], clientAddress: "10.2.3.4")
            #expect(inside.decision == .allow)
            let outside = try await client.check(
                key: fenced.secret, permissions: ["jobs:read"], clientAddress: "192.0.2.9")
            #expect(outside.reason == .ipNotAllowed && outside.httpStatus == 403 && outside.keyID == fenced.key.id)

            let headers = ["X-API-Key": fenced.secret, "X-Required-Permissions": "jobs:read"]
            var reply = try await HTTPProbe.request(
                port: http.port, path: "/authorize", headers: headers.merging(["X-Forwarded-For": "10.9.9.9"]) { $1 })
            #expect(reply.status == 200)
            reply = try await HTTPProbe.request(
                port: http.port, path: "/authorize", headers: headers.merging(["X-Forwarded-For": "192.0.2.9"]) { $1 })
            #expect(reply.status == 403 && reply.body.contains(#""reason":"IP_NOT_ALLOWED""#), "\(reply)")
            // Without X-Forwarded-For the peer (127.0.0.1) is the client: not in 10.0.0.0/8.
            reply = try await HTTPProbe.request(port: http.port, path: "/authorize", headers: headers)
            #expect(reply.status == 403)

            _ = try await client.updateKey(id: fenced.key.id, allowedNetworks: ["127.0.0.1"])
            reply = try await HTTPProbe.request(port: http.port, path: "/authorize", headers: headers)
            #expect(reply.status == 200)
        }
    }

    /// A key limited to 3 checks a minute, through the RPC Check and forward-auth (one bucket on
    /// this server for both): the fourth is RATE_LIMITED, 429 with the wait (Retry-After in whole
    /// seconds on the HTTP port, or 403 when the proxy asks for it), denied checks take nothing, and
    /// the clock refills it.
    @Test func aRateLimitHoldsOnBothPorts() async throws {
        try await withHTTP { server, http, client in
            let limited = try await client.createKey(
                name: "limited", permissions: ["jobs:read"], rateLimit: RateLimit(requests: 3, periodSeconds: 60))
            #expect(limited.key.rateLimit == RateLimit(requests: 3, periodSeconds: 60, burst: 3))
            #expect(
                try await client.check(key: limited.secret, permissions: ["vault:read"]).reason == .missingPermission)
            #expect(try await client.check(key: limited.secret, permissions: ["jobs:read"]).decision == .allow)
            #expect(try await client.check(key: limited.secret, permissions: ["jobs:read"]).decision == .allow)
            let headers = ["X-API-Key": limited.secret, "X-Required-Permissions": "jobs:read"]
            var reply = try await HTTPProbe.request(port: http.port, path: "/authorize", headers: headers)
            #expect(reply.status == 200)
            let refused = try await client.check(key: limited.secret, permissions: ["jobs:read"])
            #expect(refused.decision == .deny && refused.reason == .rateLimited && refused.httpStatus == 429)
            #expect(refused.keyID == limited.key.id)
            #expect(refused.retryAfterMS == 20_000)
            reply = try await HTTPProbe.request(port: http.port, path: "/authorize", headers: headers)
            #expect(reply.status == 429, "\(reply)")
            #expect(reply.headers["retry-after"] == "20")
            #expect(reply.body.contains(#""reason":"RATE_LIMITED""#))
            #expect(reply.headers["x-deny-reason"] == "RATE_LIMITED")
            // For nginx's auth_request, which passes only 2xx, 401 and 403 on: 403, same headers.
            reply = try await HTTPProbe.request(
                port: http.port, path: "/authorize", headers: headers.merging(["X-Rate-Limited-Status": "403"]) { $1 })
            #expect(reply.status == 403, "\(reply)")
            #expect(reply.headers["retry-after"] == "20" && reply.headers["x-deny-reason"] == "RATE_LIMITED")

            server.clock.advance(byMS: 20_000)
            #expect(try await client.check(key: limited.secret, permissions: ["jobs:read"]).decision == .allow)
            // Removed: unlimited at once.
            #expect(
                try await client.updateKey(id: limited.key.id, rateLimit: RateLimit(requests: 0)).hasRateLimit == false)
            for _ in 0..<10 {
                #expect(try await client.check(key: limited.secret, permissions: ["jobs:read"]).decision == .allow)
            }
            await server.server.service.flushAuditTrail()
            let denied = try await client.listAuditEvents(keyID: limited.key.id, action: "api.request")
                .events.filter { $0.reason == .rateLimited }
            #expect(denied.count == 3)
        }
    }

    /// Usage credits through the client, forward-auth and `apikey update --uses`: two checks
    /// allowed, then USAGE_EXCEEDED (403 on both ports), until a refill.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: CommandLineTests.binary.path)))
    func usageCreditsRunOutOnBothPortsAndAreRefilled() async throws {
        try await withHTTP { server, http, client in
            let metered = try await client.createKey(name: "metered", permissions: ["jobs:read"], remainingUses: 2)
            #expect(metered.key.remainingUses == 2)
            let headers = ["X-API-Key": metered.secret, "X-Required-Permissions": "jobs:read"]
            #expect(try await client.check(key: metered.secret, permissions: ["jobs:read"]).decision == .allow)
            var reply = try await HTTPProbe.request(port: http.port, path: "/authorize", headers: headers)
            #expect(reply.status == 200)
            let spent = try await client.check(key: metered.secret, permissions: ["jobs:read"])
            #expect(spent.reason == .usageExceeded && spent.httpStatus == 403)
            reply = try await HTTPProbe.request(port: http.port, path: "/authorize", headers: headers)
            #expect(reply.status == 403 && reply.body.contains(#""reason":"USAGE_EXCEEDED""#), "\(reply)")
            await server.server.service.flushAuditTrail()
            #expect(try await client.getKey(id: metered.key.id).remainingUses == 0)

            let run = try await runCommand(
                CommandLineTests.binary, ["update", metered.key.id, "--uses", "1", "--json"],
                environment: [
                    "APIKEY_SERVER": "127.0.0.1:\(server.port)",
                    "APIKEY_TOKEN_FILE": server.dataDirectory + "/admin.token",
                ])
            #expect(run.status == 0, "\(run.stderr)")
            #expect(
                run.stdout.contains(#""remaining_uses":1"#) || run.stdout.contains(#""remaining_uses" : 1"#),
                "\(run.stdout)")
            reply = try await HTTPProbe.request(port: http.port, path: "/authorize", headers: headers)
            #expect(reply.status == 200)
            #expect(try await client.check(key: metered.secret, permissions: ["jobs:read"]).reason == .usageExceeded)
        }
    }

    @Test func forwardAuthTakesPermissionsFromTheRouteTable() async throws {
        let routes = """
            # method  path             permissions
            POST      /api/jobs/*/run  jobs:execute
            GET       /api/jobs/**     jobs:read
            *         /health          -
            """
        try await withHTTP(routes: routes, proxy: .traefik) { _, http, client in
            let runner = try await client.createKey(name: "runner", permissions: ["jobs:execute"])
            func decide(_ method: String, _ uri: String, key: String = runner.secret) async throws -> Int {
                try await HTTPProbe.request(
                    port: http.port, path: "/authorize",
                    headers: ["X-Forwarded-Method": method, "X-Forwarded-Uri": uri, "Authorization": "Bearer \(key)"]
                ).status
            }
            #expect(try await decide("POST", "/api/jobs/7/run") == 200)
            #expect(try await decide("GET", "/api/jobs/7") == 403)
            #expect(try await decide("GET", "/health") == 200)
            #expect(try await decide("DELETE", "/api/other") == 403)  // no route: denied
            // Envoy's style: the original path after /authorize, the original method.
            let envoy = try await HTTPProbe.request(
                port: http.port, method: "POST", path: "/authorize/api/jobs/7/run",
                headers: ["Authorization": "Bearer \(runner.secret)"])
            #expect(envoy.status == 200)
        }
        #expect(throws: RouteTableError.self) { try RouteTable(parsing: "GET /x nope:nope", catalog: .standard) }
        #expect(throws: RouteTableError.self) { try RouteTable(parsing: "GET /x/**/y jobs:read", catalog: .standard) }
    }

    /// A reporter that sends `Expect: 100-continue` (curl, for a body over 1 KiB) is told to go on
    /// at once rather than left waiting; one announcing a body larger than a report may be is
    /// refused (413) before sending it.
    @Test func aLeakReporterExpectingContinueIsAnsweredAtOnce() async throws {
        try await withHTTP { _, http, client in
            let leaked = try await client.createKey(name: "curl-reported", permissions: ["jobs:read"])
            let body = Array("\(leaked.secret)\n\(String(repeating: "#", count: 2_000))\n".utf8)
            // Generous waits (a loaded machine): without the interim answer the server waits for
            // the body and the client for the answer, so no bound makes this pass by timing.
            let reporter = try RawConnection(port: http.port, receiveTimeoutSeconds: 30)
            reporter.send(
                Array(
                    "POST /leaked-keys HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.count)\r\nExpect: 100-continue\r\n\r\n"
                        .utf8))
            // Before the body: the interim answer.
            #expect(reporter.hasBytesToRead(waitingMS: 10_000), "no 100 Continue")
            let interim = String(decoding: reporter.receive(25) ?? [], as: UTF8.self)
            #expect(interim == "HTTP/1.1 100 Continue\r\n\r\n", "\(interim)")
            reporter.send(body)
            let (answer, closed) = reporter.receiveUntilClosed()
            let final = String(decoding: answer, as: UTF8.self)
            #expect(
                final.hasPrefix("HTTP/1.1 200 OK") && final.hasSuffix("reported 2\n"),
                "\(closed ? "closed" : "timed out") after: \(final)")
            #expect(try await client.check(key: leaked.secret).reason == .disabled)

            let oversized = try RawConnection(port: http.port, receiveTimeoutSeconds: 30)
            oversized.send(
                Array(
                    "POST /leaked-keys HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\nExpect: 100-continue\r\n\r\n"
                        .utf8))
            let refused = String(decoding: oversized.receiveToEnd(), as: UTF8.self)
            #expect(refused.hasPrefix("HTTP/1.1 413 "), "\(refused.prefix(60))")
        }
    }

    /// A leak report needs no secret and is worked on off the event loop, so the port takes at
    /// most ``OffLoopTasks/defaultLimit`` at once: another is answered 503 with `Retry-After` at
    /// once, not queued, and the reporter's next try is taken once the others are done.
    @Test func leakReportsInFlightAreBoundedAndTheRestRefusedAtOnce() async throws {
        try await withALeakReportHeld { held in
            let limit = OffLoopTasks.defaultLimit
            let extra = 4
            // Each from its own address (through the trusted loopback proxy), so that only the
            // port's limit applies.
            var reporters = [held.first]
            for index in 0..<(limit - 1 + extra) {
                reporters.append(try held.report(KeyService.adminTokenFormat.generate(), "10.0.1.\(index)"))
            }
            let refused = try await held.answeredAtOnce(reporters, count: extra)
            held.release()
            #expect(refused.count == extra)
            for answer in refused.values {
                #expect(answer.hasPrefix("HTTP/1.1 503 ") && answer.contains("Retry-After: 1\r\n"), "\(answer)")
            }
            for (index, reporter) in reporters.enumerated() where refused[index] == nil {
                let answer = try await reporter.answer()
                #expect(answer.hasPrefix("HTTP/1.1 200 ") && answer.hasSuffix("reported 1\n"), "\(answer)")
            }
            #expect(try await held.client.check(key: held.leakedSecret).reason == .disabled)
            let metrics = try await HTTPProbe.request(port: held.http.port, path: "/metrics").body
            #expect(metrics.contains("\napikeyd_leak_reports_refused_total \(extra)\n"), "\(metrics)")
            // Sent again, a refused report is taken.
            let again = try held.report(KeyService.adminTokenFormat.generate(), "10.0.1.0")
            #expect(try await again.answer().hasPrefix("HTTP/1.1 200 "))
        }
    }

    /// One client address (for IPv6, one /64) has at most ``OffLoopTasks/defaultLimitPerSource``
    /// leak reports in flight: past that its reports are answered 503 at once, while another
    /// address's report is still taken (a flood from one host cannot shut a secret scanner out).
    @Test func oneAddressTakesAtMostItsShareOfTheLeakReportSlots() async throws {
        try await withALeakReportHeld { held in
            let share = OffLoopTasks.defaultLimitPerSource
            let extra = 2
            // Each from another address of one IPv6 /64.
            let flooding = try (0..<(share + extra)).map { index in
                try held.report(KeyService.adminTokenFormat.generate(), "2001:db8:0:6::\(index + 1)")
            }
            let refused = try await held.answeredAtOnce(flooding, count: extra)
            let scanner = try held.report(KeyService.adminTokenFormat.generate(), "10.7.7.7")
            // A refusal would be answered at once.
            try await Task.sleep(for: .milliseconds(300))
            let scannerRefused = scanner.hasBytesToRead(waitingMS: 0)
            held.release()
            #expect(refused.count == extra, "\(refused)")
            for answer in refused.values { #expect(answer.hasPrefix("HTTP/1.1 503 "), "\(answer)") }
            #expect(!scannerRefused, "another address's report was answered while the store was held")
            #expect(try await scanner.answer().hasPrefix("HTTP/1.1 200 "))
            for (index, reporter) in flooding.enumerated() where refused[index] == nil {
                #expect(try await reporter.answer().hasPrefix("HTTP/1.1 200 "))
            }
        }
    }

    /// A leak report (of a real key, from 10.0.0.1) whose commit holds the store's admin
    /// connection until ``HeldLeakReport/release()``: reports sent meanwhile wait for their read
    /// behind it, unless the port refuses them at once.
    private func withALeakReportHeld(_ body: (HeldLeakReport) async throws -> Void) async throws {
        try await withHTTP { server, http, client in
            let leaked = try await client.createKey(name: "held", permissions: ["jobs:read"])
            // Every commit waits until released (the report's, and any other meanwhile); none after.
            let committing = Atomic<Bool>(false)
            let held = DispatchGroup()
            held.enter()
            server.server.service.setCommitHook { _ in
                committing.store(true, ordering: .releasing)
                held.wait()
            }
            defer { server.server.service.setCommitHook(nil) }
            let released = Atomic<Bool>(false)
            func releaseOnce() { if !released.exchange(true, ordering: .relaxed) { held.leave() } }
            defer { releaseOnce() }
            let first = try HeldLeakReport.report(leaked.secret, from: "10.0.0.1", port: http.port)
            for _ in 0..<500 where !committing.load(ordering: .acquiring) {
                try await Task.sleep(for: .milliseconds(10))
            }
            let reachedCommit = committing.load(ordering: .acquiring)
            #expect(reachedCommit, "the first report did not reach its commit")
            try await body(
                HeldLeakReport(
                    http: http, client: client, leakedSecret: leaked.secret, first: first, release: releaseOnce))
        }
    }

    private struct HeldLeakReport {
        let http: HTTPFrontend
        let client: APIKeysClient
        let leakedSecret: String
        /// The report being held.
        let first: RawConnection
        let release: () -> Void

        /// A leak report of `secret` from `address` (`X-Forwarded-For`, believed from loopback).
        static func report(_ secret: String, from address: String, port: Int) throws -> RawConnection {
            let reporter = try RawConnection(port: port, receiveTimeoutSeconds: 30)
            let body = "\(secret)\n"
            reporter.send(
                Array(
                    ("POST /leaked-keys HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: \(address)\r\n"
                        + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)").utf8))
            return reporter
        }

        func report(_ secret: String, _ address: String) throws -> RawConnection {
            try Self.report(secret, from: address, port: http.port)
        }

        /// The answers `reporters` got while the report is held, by index, once `count` have come
        /// (or 10 s have passed).
        func answeredAtOnce(_ reporters: [RawConnection], count: Int) async throws -> [Int: String] {
            var answered = [Int: String]()
            for _ in 0..<100 where answered.count < count {
                for (index, reporter) in reporters.enumerated() where answered[index] == nil {
                    if reporter !== first, reporter.hasBytesToRead(waitingMS: 0) {
                        answered[index] = try await reporter.answer()
                    }
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            return answered
        }
    }

    /// `POST /leaked-keys` in GitHub's secret-scanning format or as text: the keys disabled before
    /// the answer, the reports audited with the URL and the reporter's address, one answer for
    /// keys and non-keys; an oversized body 413, a GET 405.
    @Test func secretScannersReportLeaksThroughTheHTTPPort() async throws {
        try await withHTTP { server, http, client in
            let leaked = try await client.createKey(name: "pushed", permissions: ["jobs:read"])
            let other = try await client.createKey(name: "pasted", permissions: ["jobs:read"])
            let made = server.server.service.format.generate()
            let json = """
                [{"token": "\(leaked.secret)", "type": "apikeyd", "url": "https://github.com/acme/app/blob/main/.env"},
                 {"token": "\(made)", "type": "apikeyd", "url": "https://github.com/acme/app/blob/main/x"}]
                """
            let reply = try await HTTPProbe.request(
                port: http.port, method: "POST", path: "/leaked-keys", headers: ["Content-Type": "application/json"],
                body: json)
            #expect(reply.status == 200 && reply.body == "[]")
            let unknown = try await HTTPProbe.request(
                port: http.port, method: "POST", path: "/leaked-keys", body: "[{\"token\": \"\(made)\"}]")
            #expect(unknown.status == reply.status && unknown.body == reply.body)
            #expect(try await client.check(key: leaked.secret).reason == .disabled)

            let text = try await HTTPProbe.request(
                port: http.port, method: "POST", path: "/leaked-keys", body: "\(other.secret)\nnot-a-key\n")
            #expect(text.status == 200 && text.body == "reported 2\n")
            #expect(try await client.check(key: other.secret).reason == .disabled)

            let events = try await client.listAuditEvents(action: "key.leak_reported").events
            #expect(events.map(\.keyID) == [other.key.id, leaked.key.id])
            #expect(events.last?.resource == "https://github.com/acme/app/blob/main/.env")
            #expect(events.allSatisfy { $0.clientAddress == "127.0.0.1" })

            let huge = try await HTTPProbe.request(
                port: http.port, method: "POST", path: "/leaked-keys", body: String(repeating: "x", count: 70_000))
            #expect(huge.status == 413)
            let nested = try await HTTPProbe.request(
                port: http.port, method: "POST", path: "/leaked-keys", body: String(repeating: "[", count: 60_000))
            #expect(nested.status == 400, "deeply nested JSON is refused, not recursed into")
            let tooMany = try await HTTPProbe.request(
                port: http.port, method: "POST", path: "/leaked-keys",
                body: Array(repeating: made, count: 101).joined(separator: "\n"))
            #expect(tooMany.status == 413)
            #expect(try await HTTPProbe.request(port: http.port, path: "/leaked-keys").status == 405)
            #expect(try await HTTPProbe.request(port: http.port, path: "/healthz").status == 200)

            // A leaked admin token is revoked before the answer, which is the same as for a key.
            let minted = try await client.createAdminToken(name: "pushed-admin", scope: .keys)
            let adminLeak = try await HTTPProbe.request(
                port: http.port, method: "POST", path: "/leaked-keys", body: "\(minted.secret)\n")
            #expect(adminLeak.status == 200 && adminLeak.body == "reported 1\n")
            #expect(try await client.listAdminTokens().map(\.name) == ["bootstrap"])
            let revokedClient = server.client(token: minted.secret)
            await #expect(throws: APIKeysClientError.self) { _ = try await revokedClient.whoAmI() }
            await revokedClient.close()
        }
    }

    /// A leak report still being stored when the port stops (its quiesce time over) comes back
    /// with its answer to a loop that still runs: the port shuts its loops down after it. Before,
    /// they were shut down at once and the report's answer was scheduled on a dead loop, which
    /// SwiftNIO's strict mode (the suites run in it) turns into a crash of the test process.
    @Test func stoppingWaitsForALeakReportBeingStored() async throws {
        try await withHTTP { server, http, client in
            let leaked = try await client.createKey(name: "pushed", permissions: ["jobs:read"])
            // Another writer holds the database: the report's commit waits (busy timeout 5 s).
            let writer = try SQLiteConnection(path: server.dataDirectory + "/apikeys.sqlite", create: false)
            try writer.execute("BEGIN IMMEDIATE")
            let reporter = try RawConnection(port: http.port, receiveTimeoutSeconds: 10)
            let body = "\(leaked.secret)\n"
            reporter.send(
                Array("POST /leaked-keys HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
            )
            try await Task.sleep(for: .milliseconds(300))
            async let stopped: Void = http.stop(quiesceTimeout: .milliseconds(100))
            try await Task.sleep(for: .milliseconds(700))
            try writer.execute("COMMIT")
            await stopped
            let answer = String(decoding: reporter.receiveToEnd(), as: UTF8.self)
            #expect(answer.hasPrefix("HTTP/1.1 200"), "the report answered, then the connection closed: \(answer)")
            #expect(try await client.check(key: leaked.secret).reason == .disabled)
        }
    }

    /// A failure is answered over HTTP as the RPC port would say it: a check while the server
    /// shuts down is 503 "shutting down", not "the audit trail is behind".
    @Test func forwardAuthSaysWhatReallyFailed() async throws {
        try await withHTTP { server, http, client in
            let key = try await client.createKey(name: "k", permissions: ["jobs:read"])
            let headers = ["X-API-Key": key.secret]
            #expect(try await HTTPProbe.request(port: http.port, path: "/authorize", headers: headers).status == 200)
            await server.server.shutdown()
            let reply = try await HTTPProbe.request(port: http.port, path: "/authorize", headers: headers)
            #expect(reply.status == 503 && reply.headers["x-deny-reason"] == "UNAVAILABLE", "\(reply)")
            #expect(reply.body.contains("shutting down"), "\(reply.body)")
        }
    }

    @Test func hostilePeersGetAnAnswerOrAClosedConnectionAndTheOthersAreServed() async throws {
        try await withHTTP(idleTimeout: .seconds(1)) { _, http, _ in
            // Two requests in one write are answered in order on the same connection.
            let pipelined = try RawConnection(port: http.port)
            pipelined.send(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            var replies = ""
            while !replies.hasSuffix("not found\n"), let more = pipelined.receive(1) {
                replies += String(decoding: more, as: UTF8.self)
            }
            let statuses = replies.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("HTTP/1.1 ") }.map(
                String.init)
            #expect(statuses == ["HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found"], "\(replies)")

            // A complete request whose headers pass the parser's limit (80 KB) is refused: a 4xx
            // and a closed connection (the answer itself can be lost to the reset that closing
            // with unread bytes sends), never a 200.
            let huge = try RawConnection(port: http.port)
            huge.send(
                Array(
                    "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 100_000))\r\n\r\n".utf8)
            )
            let (answer, closed) = huge.receiveUntilClosed()
            let refused = String(decoding: answer, as: UTF8.self)
            #expect(closed, "the connection was neither answered nor closed")
            #expect(refused.isEmpty || refused.hasPrefix("HTTP/1.1 4"), "\(refused.prefix(80))")
            #expect(!refused.contains("200 OK"))

            // A request that never completes: closed once the idle timeout (1 s) has passed,
            // however often its bytes come: a header line every 250 ms, and the connection must
            // close while they still come (a timer that each byte restarted never would).
            let slow = try RawConnection(port: http.port)
            slow.send(Array("GET /healthz HTTP/1.1\r\n".utf8))
            var closedWhileTrickling = false
            for _ in 0..<24 where !closedWhileTrickling {
                try await Task.sleep(for: .milliseconds(250))
                _ = slow.sendWithoutWaiting(Array("X-A: b\r\n".utf8)[...])
                closedWhileTrickling = slow.isClosedByPeer(waitingMS: 0)
            }
            #expect(closedWhileTrickling, "a request trickled for 6 s against a 1 s idle timeout was not closed")

            // A wrong method on a probe, and Connection: close.
            let post = try await HTTPProbe.request(port: http.port, method: "POST", path: "/healthz")
            #expect(post.status == 405 && post.headers["allow"] == "GET, HEAD")
            let closing = try RawConnection(port: http.port)
            closing.send(Array("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
            let last = String(decoding: closing.receiveToEnd(), as: UTF8.self)
            #expect(last.hasPrefix("HTTP/1.1 200 OK") && last.hasSuffix("ok\n"), "\(last)")

            // Through all of it the port kept serving.
            #expect(try await HTTPProbe.request(port: http.port, path: "/healthz").status == 200)
        }
    }

    /// The port writes its own HTTP/1.1 responses (no NIO response encoder): HEAD, HTTP/1.0 and
    /// requests the decoder refuses must each get what HTTP says.
    @Test func responsesFollowHTTPForHeadOldClientsAndBadRequests() async throws {
        try await withHTTP { _, http, _ in
            // HEAD: the headers of the GET, its Content-Length, no body: the next response on
            // the connection starts right after the blank line.
            let head = try RawConnection(port: http.port)
            head.send(Array("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            var both = ""
            while !both.hasSuffix("not found\n"), let more = head.receive(1) {
                both += String(decoding: more, as: UTF8.self)
            }
            let parts = both.components(separatedBy: "\r\n\r\n")
            #expect(parts.count == 3 && parts[0].hasPrefix("HTTP/1.1 200 OK") && parts[0].contains("Content-Length: 3"))
            #expect(parts.count == 3 && parts[1].hasPrefix("HTTP/1.1 404 Not Found"), "\(both)")

            // HTTP/1.0 without keep-alive: answered, then closed; with keep-alive: kept, and said so.
            let old = try RawConnection(port: http.port)
            old.send(Array("GET /healthz HTTP/1.0\r\n\r\n".utf8))
            let oldAnswer = String(decoding: old.receiveToEnd(), as: UTF8.self)
            #expect(oldAnswer.hasPrefix("HTTP/1.1 200 OK") && oldAnswer.hasSuffix("ok\n"), "\(oldAnswer)")
            let kept = try RawConnection(port: http.port)
            for _ in 0..<2 {
                kept.send(Array("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".utf8))
                var answer = ""
                while !answer.hasSuffix("ok\n"), let more = kept.receive(1) {
                    answer += String(decoding: more, as: UTF8.self)
                }
                #expect(answer.contains("Connection: keep-alive\r\n"), "\(answer)")
            }

            // What the decoder refuses is answered 400 after the answers already due, then closed.
            let bad = try RawConnection(port: http.port)
            bad.send(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP AT ALL\r\n\r\n".utf8))
            let (refused, closed) = bad.receiveUntilClosed()
            let text = String(decoding: refused, as: UTF8.self)
            #expect(closed && text.hasPrefix("HTTP/1.1 200 OK"), "\(text)")
            #expect(text.contains("HTTP/1.1 400 Bad Request\r\n") && text.contains("Connection: close\r\n"), "\(text)")

            // Meanwhile everyone else is served.
            #expect(try await HTTPProbe.request(port: http.port, path: "/healthz").status == 200)
        }
    }

    /// A peer that pipelines requests and never reads the answers is not read from once its
    /// answers back up: the kernel stops taking its bytes (the answers queued for it stay
    /// bounded), the connection stays open, and everyone else is served. The server parses
    /// megabytes of requests before that: `make test` runs this alone, after the other suites, as
    /// it does the failover tests, so that its load does not stretch their time bounds.
    @Test func aPeerThatNeverReadsStopsBeingReadFrom() async throws {
        try await withHTTP { _, http, _ in
            let hoarder = try RawConnection(port: http.port, receiveBufferBytes: 4096)
            let burst = Array(String(repeating: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", count: 2000).utf8)
            var taken = 0
            var lastTaken = ContinuousClock.now
            let started = ContinuousClock.now
            while ContinuousClock.now - lastTaken < .seconds(2), ContinuousClock.now - started < .seconds(30) {
                // From where the kernel stopped taking: requests are never cut and sent again.
                let sent = hoarder.sendWithoutWaiting(burst[(taken % burst.count)...])
                if sent > 0 {
                    taken += sent
                    lastTaken = .now
                } else {
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            #expect(ContinuousClock.now - started < .seconds(30), "still reading after 30 s: \(taken >> 20) MB taken")
            #expect(taken < 64 << 20, "\(taken >> 20) MB taken from a peer that reads nothing")
            #expect(!hoarder.isClosedByPeer(waitingMS: 100), "the hoarding connection was closed")
            #expect(try await HTTPProbe.request(port: http.port, path: "/healthz").status == 200)
        }
    }
}
