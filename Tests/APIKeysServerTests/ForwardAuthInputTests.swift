import APIKeysClient
import APIKeysCore
@testable import APIKeysHTTP
import APIKeysServer
import APIKeysTestSupport
import Foundation
import NIOHTTP1
import Logging
import Testing

/// What forward-auth believes of a request: the path it judges, the client address, the
/// permissions and the original request, each from the operator's configuration and never from
/// what a client wrote.
@Suite struct ForwardAuthInputTests {
    // MARK: Paths

    @Test(arguments: [
        ("/api/jobs/1/secrets", "/api/jobs/1/secrets"),
        ("/api/jobs/1/%73ecrets", "/api/jobs/1/secrets"),
        ("/api/jobs/1/./secrets", "/api/jobs/1/secrets"),
        ("/api/jobs/x/../1/secrets", "/api/jobs/1/secrets"),
        ("/api/jobs/1/%2e%2e/1/secrets", "/api/jobs/1/secrets"),
        ("/api/jobs/1/%2E/secrets?x=/../y", "/api/jobs/1/secrets"),
        ("/api//jobs///1/secrets", "/api/jobs/1/secrets"),
        ("/api/jobs/1/secrets/", "/api/jobs/1/secrets/"),
        ("/api/jobs/1/secrets/.", "/api/jobs/1/secrets/"),
        ("/api/jobs/%7e1/caf%c3%a9", "/api/jobs/~1/caf%C3%A9"),
        ("/", "/"),
    ])
    func pathsAreNormalized(raw: String, canonical: String) throws {
        #expect(try RequestPath.normalized(raw) == canonical)
    }

    @Test(arguments: [
        ("/api/jobs/1/secrets;x", RequestPath.Refusal.parameter),
        ("/api/jobs/1/secrets%2F", .encodedSeparator),
        ("/api/jobs/1%2fsecrets", .encodedSeparator),
        ("/api/jobs/1%5Csecrets", .encodedSeparator),
        ("/api/jobs/1\\secrets", .backslash),
        ("/api/jobs/1/%00secrets", .controlCharacter),
        ("/api/jobs/1/%1bsecrets", .controlCharacter),
        ("/api/jobs/1/%C2%85", .controlCharacter),
        ("/api/jobs/1/%C0%AEsecrets", .invalidUTF8),
        ("/api/jobs/%C0%AE%C0%AE/secrets", .invalidUTF8),
        ("/api/jobs/1/%zzsecrets", .invalidPercentEncoding),
        ("/api/jobs/1/secrets%2", .invalidPercentEncoding),
        ("/../api/jobs/1/secrets", .climbsAboveRoot),
        ("/api/../../jobs", .climbsAboveRoot),
        ("api/jobs/1", .notAbsolutePath),
        ("/api/jobs/1#x", .fragment),
    ])
    func pathsThatCannotBeJudgedAreRefused(raw: String, refusal: RequestPath.Refusal) {
        #expect(throws: refusal) { try RequestPath.normalized(raw) }
    }

    /// The shortcut for paths that are canonical already must answer exactly as the full
    /// normalization: checked on every target up to 6 characters over an alphabet of the
    /// characters that matter (slashes, dots, percent-encodings, separators, a query, non-ASCII).
    @Test func theCanonicalPathShortcutAgreesWithTheFullNormalization() {
        let alphabet = ["/", ".", "a", "~", "%", "2", "e", "?", ";", "#", "é"]
        var targets = [""]
        var checked = 0
        var shortcuts = 0
        for _ in 0..<6 {
            targets = targets.flatMap { prefix in alphabet.map { prefix + $0 } }
            for target in targets {
                checked += 1
                guard let fast = RequestPath.alreadyCanonical(target) else { continue }
                shortcuts += 1
                let full = try? RequestPath.normalizedInFull(target)
                #expect(full == fast, "\(target): shortcut \(fast), in full \(full ?? "refused")")
            }
        }
        #expect(checked > 1_000_000 && shortcuts > 10_000)
    }

    /// Route matching walks the path in place; it must agree with matching the path's split
    /// segments (the definition) on every pattern and path built from a few segments.
    @Test func routeMatchingAgreesWithMatchingTheSplitSegments() {
        // Byte for byte, as an upstream compares paths (not as Swift compares strings).
        func same(_ pattern: Substring, _ segment: Substring) -> Bool {
            pattern == "*" || pattern.utf8.elementsEqual(segment.utf8)
        }
        func byDefinition(_ pattern: [Substring], _ path: String) -> Bool {
            let segments = path.utf8.split(separator: UInt8(ascii: "/")).map { Substring($0) }
            if pattern.last == "**" {
                let fixed = pattern.dropLast()
                return segments.count >= fixed.count && zip(fixed, segments).allSatisfy(same)
            }
            return pattern.count == segments.count && zip(pattern, segments).allSatisfy(same)
        }
        let parts = ["a", "b", "*", "**"]
        var patterns: [[Substring]] = [[]]
        for _ in 0..<3 { patterns += patterns.flatMap { prefix in parts.map { prefix + [Substring($0)] } } }
        patterns = Array(Set(patterns.filter { !$0.dropLast().contains("**") }))
        var paths = ["/", "//", ""]
        for _ in 0..<4 {
            paths += paths.flatMap { prefix in ["/a", "/b", "/", "/ab", "/\u{301}a"].map { prefix + $0 } }
        }
        paths = Array(Set(paths))
        for pattern in patterns {
            for path in paths {
                #expect(
                    PathPattern(pattern).matches(path[...]) == byDefinition(pattern, path), "\(pattern) on \(path)")
            }
        }
        // Canonically equivalent spellings are different paths to an upstream: é is not e + U+0301.
        #expect(!PathPattern(["caf\u{E9}"]).matches("/cafe\u{301}"[...]))
        #expect(PathPattern(["caf\u{E9}"]).matches("/caf\u{E9}"[...]))
        let table = try! RouteTable(parsing: "get /api/** jobs:read\nPOST /api/*/run jobs:execute", catalog: .standard)
        #expect(table.permissions(method: "GET", path: "/api/jobs?x=1") == ["jobs:read"])
        #expect(table.permissions(method: "post", path: "/api/7/run") == ["jobs:execute"])
        #expect(table.permissions(method: "POST", path: "/api/7/run/now") == nil)
    }

    // MARK: Credentials

    /// `Authorization: Bearer <secret>` (the scheme in any case, then one space; optional
    /// whitespace around the secret), else `X-API-Key`; a second header of either kind is a
    /// repetition.
    @Test func theCredentialIsTheBearerTokenElseTheAPIKey() {
        func key(_ pairs: [(String, String)]) -> (key: String, repeated: Bool) {
            ForwardAuth.presentedKey(HTTPHeaders(pairs))
        }
        for value in ["Bearer S", "bearer S", "BEARER S", "bEaReR S", "Bearer   S  ", "Bearer \tS\t"] {
            #expect(key([("Authorization", value)]) == ("S", false), "\(value)")
        }
        for value in ["Bearer", "Bearer ", "Bearerx S", "Basic S", "Bearer\tS", " Bearer S", "Béarer S"] {
            #expect(key([("Authorization", value)]).key == "", "\(value)")
        }
        #expect(key([("Authorization", "Bearer S x")]).key == "S x")
        #expect(key([("Authorization", "Bearer é")]).key == "é")
        #expect(key([("authorization", "Basic x"), ("x-api-key", " \tK ")]) == ("K", false))
        #expect(key([("X-API-Key", "K"), ("Authorization", "Bearer S")]) == ("S", false))
        #expect(key([("Authorization", "Bearer S"), ("Authorization", "Bearer T")]) == ("S", true))
        #expect(key([("X-API-Key", "K"), ("X-Api-Key", "L")]) == ("K", true))
        #expect(key([("Host", "x")]) == ("", false))
    }

    // MARK: Client addresses

    private func fields(_ pairs: [(String, String)]) -> HTTPHeaders { HTTPHeaders(pairs) }

    @Test func theForwardingChainIsWalkedFromTheRightPastTrustedProxies() {
        let policy = ClientAddressPolicy(trustedProxies: [IPNetwork("10.0.0.0/24")!, IPNetwork("127.0.0.1")!])
        func resolve(_ peer: String, _ pairs: [(String, String)]) -> ClientAddressPolicy.Resolved {
            policy.resolve(peer: peer, headers: fields(pairs))
        }
        #expect(resolve("127.0.0.1", [("X-Forwarded-For", "6.6.6.6, 192.0.2.7, 10.0.0.5")]).address == "192.0.2.7")
        // Several header lines are one list, in order.
        #expect(
            resolve("127.0.0.1", [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "192.0.2.8")]).address
                == "192.0.2.8")
        // Every entry trusted: the leftmost.
        #expect(resolve("127.0.0.1", [("X-Forwarded-For", "10.0.0.9, 10.0.0.5")]).address == "10.0.0.9")
        // A malformed entry ends the walk at the last good address.
        #expect(resolve("127.0.0.1", [("X-Forwarded-For", "192.0.2.7, garbage, 10.0.0.5")]).address == "10.0.0.5")
        #expect(resolve("127.0.0.1", [("X-Forwarded-For", "192.0.2.7,,")]).address == "127.0.0.1")
        // An untrusted peer's header is not believed, and says so.
        let direct = resolve("192.0.2.50", [("X-Forwarded-For", "10.0.0.1")])
        #expect(direct.address == "192.0.2.50" && direct.ignoredHeader)
        #expect(resolve("192.0.2.50", []) == .init(address: "192.0.2.50", ignoredHeader: false))
        // The other header is not read at all.
        #expect(resolve("127.0.0.1", [("Forwarded", "for=192.0.2.7")]).address == "127.0.0.1")
    }

    @Test func rfc7239ForwardedIsReadWithQuotedIPv6() {
        let policy = ClientAddressPolicy(header: .forwarded)
        func resolve(_ value: String) -> String {
            policy.resolve(peer: "127.0.0.1", headers: fields([("Forwarded", value)])).address
        }
        #expect(resolve(#"for=192.0.2.60;proto=http;by=203.0.113.43"#) == "192.0.2.60")
        #expect(resolve(#"for=6.6.6.6, For="[2001:db8:cafe::17]:4711""#) == "[2001:db8:cafe::17]:4711")
        #expect(resolve(#"for="[2001:db8::1]", for=127.0.0.1"#) == "[2001:db8::1]")
        #expect(resolve(#"for=192.0.2.43, for=unknown"#) == "127.0.0.1")  // obfuscated: the walk ends
        #expect(resolve(#"proto=https"#) == "127.0.0.1")
    }

    // MARK: Through the HTTP port

    /// Starts a server and its HTTP port with `options`, answering `/authorize`.
    private func withForwardAuth(
        _ options: ForwardAuthOptions, _ body: (TestServer, Int, APIKeysClient) async throws -> Void
    ) async throws {
        try await withServer { server, client in
            var logger = Logger(label: "apikeyd-forward-auth-test")
            logger.logLevel = .critical
            let http = try await HTTPFrontend.start(
                server: server.server, metrics: nil, forwardAuth: options, host: "127.0.0.1", port: 0, logger: logger)
            do {
                try await body(server, http.port, client)
            } catch {
                await http.stop()
                throw error
            }
            await http.stop()
        }
    }

    @Test func forwardAuthIsServedAtItsPrefixAndNowhereElse() async throws {
        let routes = try RouteTable(parsing: "GET /api/** jobs:read", catalog: .standard)
        try await withForwardAuth(ForwardAuthOptions(routes: routes, proxy: .envoy)) { server, port, client in
            let reader = try await client.createKey(name: "reader", permissions: ["jobs:read"])
            // The prefix alone, with a query, or followed by a path segment: forward-auth decides.
            for path in ["/authorize", "/authorize?x=1", "/authorize/"] {
                let reply = try await HTTPProbe.request(port: port, path: path, headers: [:])
                #expect(reply.status == 401 && reply.headers["x-deny-reason"] == "NO_KEY", "\(path): \(reply)")
            }
            // The prefix as the start of another segment is another path.
            for path in ["/authorizeX", "/authorize.", "/authorize-x/api/x"] {
                let reply = try await HTTPProbe.request(port: port, path: path, headers: ["X-API-Key": reader.secret])
                #expect(reply.status == 404, "\(path): \(reply)")
            }
            // What follows the prefix is the original path, judged and recorded as such.
            let allowed = try await HTTPProbe.request(
                port: port, path: "/authorize/api/caf%C3%A9", headers: ["X-API-Key": reader.secret])
            #expect(allowed.status == 200, "\(allowed)")
            await server.server.service.flushAuditTrail()
            let events = try await client.listAuditEvents(keyID: reader.key.id).events
            #expect(events.first?.resource == "GET /api/caf%C3%A9", "\(events)")
        }
    }

    @Test func onlyATrustedProxyNamesPermissionsAndOnlyCatalogNames() async throws {
        try await withForwardAuth(ForwardAuthOptions(proxy: .envoy)) { server, port, client in
            let reader = try await client.createKey(name: "reader", permissions: ["jobs:read"])
            func decide(_ permissions: String) async throws -> HTTPProbe.Reply {
                try await HTTPProbe.request(
                    port: port, path: "/authorize",
                    headers: ["X-API-Key": reader.secret, "X-Required-Permissions": permissions])
            }
            #expect(try await decide("jobs:read").status == 200)
            let missing = try await decide("jobs:read, vault:read")
            #expect(missing.status == 403)
            #expect(missing.headers["www-authenticate"]?.contains(#"scope="vault:read""#) == true)
            let bads = [",", "jobs:read,,", "jobs:read, ", #"x", error="forged"#, "nope:nope"]
            for bad in bads {
                let reply = try await decide(bad)
                #expect(reply.status == 400, "\(bad): \(reply)")
                #expect(
                    reply.headers["www-authenticate"] == nil && !reply.headers.values.contains { $0.contains("forged") }
                )
            }
            // Each refusal is in the trail: denied INVALID_REQUEST under the key, saying why.
            await server.server.service.flushAuditTrail()
            let refusals = try await client.listAuditEvents(keyID: reader.key.id).events
                .filter { $0.reason == .invalidRequest }
            #expect(refusals.count == bads.count)
            #expect(refusals.allSatisfy { $0.detail.hasPrefix("INVALID_ARGUMENT: X-Required-Permissions") })
        }
        // 127.0.0.1 not trusted: its permission header is ignored (a valid key is enough).
        try await withForwardAuth(ForwardAuthOptions(clientAddress: ClientAddressPolicy(trustedProxies: []))) {
            _, port, client in
            let reader = try await client.createKey(name: "reader", permissions: ["jobs:read"])
            let reply = try await HTTPProbe.request(
                port: port, path: "/authorize", headers: ["X-API-Key": reader.secret, "X-Required-Permissions": ","])
            #expect(reply.status == 200)
        }
    }

    /// Two credentials in one request (two Authorization headers, or two X-API-Key) are refused
    /// before any decision, whichever comes first: the proxy, this server and the upstream could
    /// each take a different one.
    @Test func aRequestWithTwoCredentialsIsRefused() async throws {
        try await withForwardAuth(ForwardAuthOptions(proxy: .envoy)) { server, port, client in
            let reader = try await client.createKey(name: "reader", permissions: ["jobs:read"])
            let other = try await client.createKey(name: "other", permissions: ["jobs:read"])
            func ask(_ headers: [String]) -> String {
                guard let connection = try? RawConnection(port: port) else { return "" }
                let head = (["GET /authorize HTTP/1.1", "Host: x", "Connection: close"] + headers).joined(
                    separator: "\r\n")
                connection.send(Array((head + "\r\n\r\n").utf8))
                return String(decoding: connection.receiveToEnd(), as: UTF8.self)
            }
            #expect(ask(["Authorization: Bearer \(reader.secret)"]).hasPrefix("HTTP/1.1 200 "))
            for twice in [
                ["Authorization: Bearer \(reader.secret)", "Authorization: Bearer \(other.secret)"],
                ["Authorization: Bearer \(reader.secret)", "authorization: Basic eDp5"],
                ["X-API-Key: \(reader.secret)", "X-API-Key: \(reader.secret)"],
            ] {
                let answer = ask(twice)
                #expect(answer.hasPrefix("HTTP/1.1 400 "), "\(twice): \(answer.prefix(60))")
                #expect(answer.lowercased().contains("x-deny-reason: invalid_argument"), "\(answer)")
            }
            await server.server.service.flushAuditTrail()
            let refusals = try await client.listAuditEvents(keyID: reader.key.id).events
                .filter { $0.reason == .invalidRequest }
            #expect(refusals.count == 3 && refusals.allSatisfy { $0.detail.contains("more than one") })
        }
    }

    @Test func onlyTheConfiguredProxysHeadersSayWhatIsJudged() async throws {
        let routes = try RouteTable(
            parsing: "POST /api/jobs/*/run jobs:execute\nGET /api/jobs/** jobs:read\n", catalog: .standard)
        try await withForwardAuth(ForwardAuthOptions(routes: routes, proxy: .traefik)) { server, port, client in
            let reader = try await client.createKey(name: "reader", permissions: ["jobs:read"])
            // Traefik reports POST /api/jobs/42/run; the client adds nginx's headers.
            let forged = try await HTTPProbe.request(
                port: port, path: "/authorize",
                headers: [
                    "Authorization": "Bearer \(reader.secret)", "X-Forwarded-Method": "POST",
                    "X-Forwarded-Uri": "/api/jobs/42/run", "X-Original-Method": "GET", "X-Original-URI": "/api/jobs/42",
                    "X-Required-Permissions": "jobs:read",
                ])
            #expect(forged.status == 403, "\(forged)")
            await server.server.service.flushAuditTrail()
            let events = try await client.listAuditEvents(keyID: reader.key.id).events
            #expect(events.first?.resource == "POST /api/jobs/42/run", "\(events)")
            // A path that cannot be judged: 400 before any decision.
            let refused = try await HTTPProbe.request(
                port: port, path: "/authorize",
                headers: ["Authorization": "Bearer \(reader.secret)", "X-Forwarded-Uri": "/api/jobs/1%2Frun"])
            #expect(refused.status == 400 && refused.headers["x-deny-reason"] == "INVALID_PATH", "\(refused)")
            // The refusal is recorded under the key, with the path as it arrived and why.
            await server.server.service.flushAuditTrail()
            let recorded = try await client.listAuditEvents(keyID: reader.key.id).events.first
            #expect(
                recorded?.reason == .invalidRequest && recorded?.decision == .deny, "\(String(describing: recorded))")
            #expect(recorded?.resource == "GET /api/jobs/1%2Frun")
            #expect(recorded?.detail.hasPrefix("INVALID_PATH: ") == true, "\(String(describing: recorded))")
            #expect(recorded?.clientAddress == "127.0.0.1")
            // One from a secret that names no key is recorded too, with the unknown keys' checks.
            let stranger = "dbm_" + String(repeating: "Q", count: 46)
            let unknown = try await HTTPProbe.request(
                port: port, path: "/authorize",
                headers: ["Authorization": "Bearer \(stranger)", "X-Forwarded-Uri": "/api/jobs/1;x"])
            #expect(unknown.status == 400)
            await server.server.service.flushAuditTrail()
            let all = try await client.listAuditEvents(action: "api.request").events
            #expect(
                all.contains { $0.reason == .invalidRequest && $0.keyID.isEmpty && $0.resource == "GET /api/jobs/1;x" })
        }
    }

    /// ESC, CR, LF, BEL, DEL and C1 controls in a Check's text fields: refused, naming the field.
    @Test func checkRefusesControlCharacters() async throws {
        try await withServer { _, client in
            let key = try await client.createKey(name: "k", permissions: ["jobs:read"])
            for control in ["\u{1B}[2J", "\r", "\nline2", "\u{07}", "\u{7F}", "\u{85}", "\u{9B}31m"] {
                for field in ["resource", "client_address", "permissions"] {
                    do {
                        _ = try await client.check(
                            key: key.secret, permissions: field == "permissions" ? ["jobs:read" + control] : [],
                            resource: field == "resource" ? "GET /x" + control : "",
                            clientAddress: field == "client_address" ? "10.0.0.1" + control : "")
                        Issue.record("a \(field) with U+\(control.unicodeScalars.first!.value) was accepted")
                    } catch let error as APIKeysClientError {
                        #expect("\(error)".contains(field) && "\(error)".contains("control character"), "\(error)")
                    }
                }
            }
            #expect(try await client.check(key: key.secret, resource: "GET /café?q=ü").decision == .allow)
        }
    }
}
