import APIKeysAdminAPI
import APIKeysClient
import APIKeysCore
import APIKeysHTTP
import APIKeysJSON
import APIKeysServer
@testable import APIKeysSQLite
@_spi(Testing) import APIKeysStore
import APIKeysTestSupport
import Foundation
import Logging
import Testing

/// The JSON admin API on its own port, through real HTTP on 127.0.0.1 against a real server: the
/// seed's lifecycle on both stores, the scope matrix, and hostile requests.
@Suite struct AdminAPITests {
    enum Store: String, CaseIterable, CustomTestStringConvertible {
        case sqlite, postgres
        var testDescription: String { rawValue }
    }

    /// A server (on `store`) with its admin API on port 0.
    private func withAdminAPI(
        store: Store = .sqlite, requestTimeout: Duration = .seconds(30), maxConnections: Int = 256,
        requestsPerSecond: UInt32 = 0, tls: TLSFiles? = nil, metrics: HTTPFrontend.Metrics? = nil,
        _ body: (TestServer, AdminAPI, APIKeysClient) async throws -> Void
    ) async throws {
        let url = store == .postgres ? try await TestDatabase.createDatabase() : nil
        try await withServer(configure: {
            $0.databaseURL = url
            $0.metricsFactory = metrics?.factory
        }) { server, client in
            var logger = Logger(label: "apikeyd-admin-api-test")
            logger.logLevel = .critical
            let api = try await AdminAPI.start(
                server: server.server,
                options: .init(
                    port: 0, tls: tls, requestTimeout: requestTimeout, maxConnections: maxConnections,
                    requestsPerSecond: requestsPerSecond),
                clock: server.clock, logger: logger)
            do {
                try await body(server, api, client)
            } catch {
                await api.stop()
                throw error
            }
            await api.stop()
        }
    }

    /// One JSON request; the reply's status, headers and parsed body (nil when empty or not JSON).
    private struct Reply {
        let status: Int
        let headers: [String: String]
        let text: String
        var json: [String: Any]? {
            (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
        }
        var array: [[String: Any]]? {
            (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [[String: Any]]
        }
        subscript(_ field: String) -> Any? { json?[field] }
    }

    private func call(
        _ api: AdminAPI, _ method: String, _ path: String, token: String?, body: Any? = nil,
        headers: [String: String] = [:]
    ) async throws -> Reply {
        var headers = headers
        if let token { headers["Authorization"] = "Bearer \(token)" }
        var text: String?
        if let body {
            headers["Content-Type"] = headers["Content-Type"] ?? "application/json"
            text = String(decoding: try JSONSerialization.data(withJSONObject: body), as: UTF8.self)
        }
        let reply = try await HTTPProbe.request(
            port: api.port, method: method, path: path, headers: headers, body: text)
        return Reply(status: reply.status, headers: reply.headers, text: reply.body)
    }

    private func check(_ api: AdminAPI, token: String, secret: String, _ permissions: [String]) async throws -> (
        decision: String, status: Int, reason: String?
    ) {
        let reply = try await call(
            api, "POST", "/v1/check", token: token, body: ["key": secret, "permissions": permissions])
        #expect(reply.status == 200, "\(reply.text)")
        return (
            reply["decision"] as? String ?? "", reply["http_status"] as? Int ?? 0, reply["reason"] as? String
        )
    }

    @Test(arguments: Store.allCases)
    func theSeedsLifecycleOverJSON(_ store: Store) async throws {
        try await withAdminAPI(store: store) { server, api, _ in
            let token = server.adminToken
            let expiry = JSONTime.rfc3339(server.clock.nowMS() + 30 * 86_400_000)!
            let created = try await call(
                api, "POST", "/v1/keys", token: token,
                body: ["name": "deploy", "permissions": ["jobs:execute", "history:read"], "expires_at": expiry])
            #expect(created.status == 201, "\(created.text)")
            let secret = try #require(created["secret"] as? String)
            let key = try #require(created["key"] as? [String: Any])
            let id = try #require(key["id"] as? String)
            #expect(secret.hasPrefix("dbm_"))
            #expect(key["expires_at"] as? String == expiry)
            #expect(created.headers["cache-control"] == "no-store")

            // The secret is shown once: never again, by any read.
            for path in ["/v1/keys/\(id)", "/v1/keys"] {
                let read = try await call(api, "GET", path, token: token)
                #expect(read.status == 200 && !read.text.contains(secret) && !read.text.contains("\"secret\""))
            }
            #expect(try await check(api, token: token, secret: secret, ["jobs:execute"]).decision == "ALLOW")

            let disabled = try await call(api, "POST", "/v1/keys/\(id)/disable", token: token)
            #expect(disabled.status == 200 && disabled["enabled"] as? Bool == false, "\(disabled.text)")
            let whileDisabled = try await check(api, token: token, secret: secret, ["jobs:execute"])
            #expect(
                whileDisabled.decision == "DENY" && whileDisabled.status == 401 && whileDisabled.reason == "DISABLED")

            #expect(try await call(api, "POST", "/v1/keys/\(id)/enable", token: token).status == 200)
            #expect(try await check(api, token: token, secret: secret, ["jobs:execute"]).decision == "ALLOW")

            let rotated = try await call(api, "POST", "/v1/keys/\(id)/rotate", token: token)
            #expect(rotated.status == 200, "\(rotated.text)")
            let newSecret = try #require(rotated["secret"] as? String)
            #expect(newSecret != secret)
            #expect(try await check(api, token: token, secret: secret, ["jobs:execute"]).status == 401)
            #expect(try await check(api, token: token, secret: newSecret, ["jobs:execute"]).decision == "ALLOW")

            let narrowed = try await call(
                api, "PATCH", "/v1/keys/\(id)", token: token,
                body: ["permissions": ["history:read"], "expires_at": NSNull()])
            #expect(
                narrowed.status == 200 && narrowed["permissions"] as? [String] == ["history:read"], "\(narrowed.text)")
            #expect(narrowed["expires_at"] == nil && narrowed["expires_at_ms"] as? Int == 0)
            let missing = try await check(api, token: token, secret: newSecret, ["jobs:execute"])
            #expect(missing.status == 403 && missing.reason == "MISSING_PERMISSION")

            let deleted = try await call(api, "DELETE", "/v1/keys/\(id)", token: token)
            #expect(deleted.status == 204 && deleted.text.isEmpty)
            #expect(try await check(api, token: token, secret: newSecret, ["history:read"]).status == 401)
            let gone = try await call(api, "GET", "/v1/keys/\(id)", token: token)
            #expect(gone.status == 404 && gone["code"] as? String == "NOT_FOUND")
            #expect(gone.headers["content-type"] == "application/problem+json")

            // The trail holds every step, by the token's name, and the checks as trigger api.
            await server.server.service.flushAuditTrail()
            let trail = try await call(api, "GET", "/v1/audit-events?key_id=\(id)&page_size=100", token: token)
            let events = try #require(trail["events"] as? [[String: Any]])
            let actions = Set(events.compactMap { $0["action"] as? String })
            for action in ["key.created", "key.disabled", "key.enabled", "key.rotated", "key.updated", "key.deleted"] {
                #expect(actions.contains(action), "\(action) missing from \(actions)")
            }
            #expect(
                events.filter { $0["trigger"] as? String == "admin" }.allSatisfy {
                    $0["actor"] as? String == "bootstrap"
                })
            #expect(events.contains { $0["action"] as? String == "api.request" && $0["trigger"] as? String == "api" })
        }
    }

    /// The previous issue's matrix over HTTP: each operation with tokens of each scope; a call
    /// outside the scope is 403 PERMISSION_DENIED, changes nothing and is in the trail.
    @Test func everyOperationIsScopedAsOverRPC() async throws {
        try await withAdminAPI { server, api, client in
            let admin = server.adminToken
            var tokens: [String: String] = [:]
            for scope in ["read", "keys", "admin"] {
                let made = try await call(
                    api, "POST", "/v1/admin-tokens", token: admin, body: ["name": "t-\(scope)", "scope": scope])
                #expect(made.status == 201, "\(made.text)")
                tokens[scope] = try #require(made["secret"] as? String)
            }
            let victim = try await client.createKey(name: "victim", permissions: ["jobs:read"])
            let id = victim.key.id
            // (method, path, body, the scope it needs); each write is one that would succeed.
            let operations: [(String, String, Any?, String)] = [
                ("GET", "/v1/keys", nil, "read"), ("GET", "/v1/keys/\(id)", nil, "read"),
                ("GET", "/v1/permissions", nil, "read"), ("GET", "/v1/audit-events", nil, "read"),
                ("GET", "/v1/audit-chain", nil, "read"), ("GET", "/v1/policy", nil, "read"),
                ("GET", "/v1/whoami", nil, "read"),
                ("POST", "/v1/check", ["key": victim.secret, "permissions": ["jobs:read"]], "read"),
                ("POST", "/v1/keys", ["name": "new", "permissions": ["jobs:read"]], "keys"),
                ("PATCH", "/v1/keys/\(id)", ["name": "renamed"], "keys"),
                ("POST", "/v1/keys/\(id)/disable", nil, "keys"), ("POST", "/v1/keys/\(id)/enable", nil, "keys"),
                ("POST", "/v1/keys/\(id)/rotate", nil, "keys"),
                ("GET", "/v1/admin-tokens", nil, "admin"),
                ("POST", "/v1/admin-tokens", ["name": "minted", "scope": "read"], "admin"),
            ]
            let rank = ["read": 0, "keys": 1, "admin": 2]
            var refusals = 0
            for (method, path, body, needed) in operations {
                for (scope, token) in tokens.sorted(by: { $0.key < $1.key }) {
                    let keysBefore = try await client.listKeys().keys.count
                    let reply = try await call(api, method, path, token: token, body: body)
                    if rank[scope]! >= rank[needed]! {
                        #expect((200..<300).contains(reply.status), "\(scope) \(method) \(path): \(reply.text)")
                        // Undo what succeeded, so the next token meets the same state.
                        if path == "/v1/keys", method == "POST",
                            let made = (reply["key"] as? [String: Any])?["id"] as? String
                        {
                            try await client.deleteKey(id: made)
                        }
                        if path == "/v1/admin-tokens", method == "POST" {
                            _ = try await call(api, "DELETE", "/v1/admin-tokens/minted", token: admin)
                        }
                    } else {
                        refusals += 1
                        #expect(
                            reply.status == 403 && reply["code"] as? String == "PERMISSION_DENIED",
                            "\(scope) \(method) \(path): \(reply.text)")
                        #expect(try await client.listKeys().keys.count == keysBefore)
                    }
                }
            }
            // Revoking needs admin too; a refused revoke leaves the token working.
            let refusedRevoke = try await call(api, "DELETE", "/v1/admin-tokens/t-read", token: tokens["keys"])
            #expect(refusedRevoke.status == 403)
            #expect(try await call(api, "GET", "/v1/whoami", token: tokens["read"]).status == 200)
            #expect(try await call(api, "DELETE", "/v1/admin-tokens/t-read", token: admin).status == 204)
            let revoked = try await call(api, "GET", "/v1/whoami", token: tokens["read"])
            #expect(revoked.status == 401 && revoked["code"] as? String == "UNAUTHENTICATED")
            await server.server.service.flushAuditTrail()
            let denied = try await client.listAuditEvents(action: "admin.permission_denied", pageSize: 500)
            #expect(denied.events.count == refusals + 1, "\(denied.events.map(\.detail))")
            #expect(Set(denied.events.map(\.actor)).isSubset(of: ["t-read", "t-keys"]))
        }
    }

    /// ListAdminTokens says when each token was last used, to within a minute, on both stores.
    @Test(arguments: Store.allCases)
    func adminTokensSayWhenTheyWereLastUsed(_ store: Store) async throws {
        try await withAdminAPI(store: store) { server, api, _ in
            let admin = server.adminToken
            let made = try await call(
                api, "POST", "/v1/admin-tokens", token: admin, body: ["name": "ci", "scope": "read"])
            let ci = try #require(made["secret"] as? String)
            func lastUsed() async throws -> Int? {
                let listed = try await call(api, "GET", "/v1/admin-tokens", token: admin)
                return listed.array?.first { $0["name"] as? String == "ci" }?["last_used_at_ms"] as? Int
            }
            #expect(try await lastUsed() == 0)
            let first = server.clock.nowMS()
            #expect(try await call(api, "GET", "/v1/whoami", token: ci).status == 200)
            #expect(try await lastUsed() == Int(first))
            // Within the minute nothing is written again; after it, the new time is.
            server.clock.advance(byMS: 30_000)
            _ = try await call(api, "GET", "/v1/whoami", token: ci)
            #expect(try await lastUsed() == Int(first))
            server.clock.advance(byMS: 31_000)
            _ = try await call(api, "GET", "/v1/whoami", token: ci)
            #expect(try await lastUsed() == Int(first + 61_000))
            let listed = try await call(api, "GET", "/v1/admin-tokens", token: admin)
            let entry = listed.array?.first { $0["name"] as? String == "ci" }
            #expect(entry?["last_used_at"] as? String == JSONTime.rfc3339(first + 61_000))
        }
    }

    @Test func aRetriedCreateWithTheSameIdempotencyKeyCreatesOneKey() async throws {
        try await withAdminAPI { server, api, client in
            let token = server.adminToken
            let body: [String: Any] = ["name": "once", "permissions": ["jobs:read"]]
            let headers = [
                "Authorization": "Bearer \(token)", "Content-Type": "application/json", "Idempotency-Key": "deploy-42",
            ]
            let first = try await HTTPProbe.request(
                port: api.port, method: "POST", path: "/v1/keys", headers: headers,
                body: #"{"name":"once","permissions":["jobs:read"]}"#)
            // The retry spells the same request another way: fields in another order, spaces.
            let retry = try await HTTPProbe.request(
                port: api.port, method: "POST", path: "/v1/keys", headers: headers,
                body: #"{ "permissions": ["jobs:read"], "name": "once" }"#)
            #expect(first.status == 201 && retry.status == 201, "\(first.body) \(retry.body)")
            #expect(retry.body == first.body && retry.headers["idempotent-replayed"] == "true")
            let firstJSON = try JSONSerialization.jsonObject(with: Data(first.body.utf8)) as? [String: Any]
            #expect(try await client.listKeys().keys.filter { $0.name == "once" }.count == 1)
            // The same key with another request is refused; another key creates another key.
            let other = try await call(
                api, "POST", "/v1/keys", token: token, body: ["name": "twice", "permissions": ["jobs:read"]],
                headers: ["Idempotency-Key": "deploy-42"])
            #expect(other.status == 422 && other.headers["content-type"] == "application/problem+json")
            let fresh = try await call(
                api, "POST", "/v1/keys", token: token, body: body, headers: ["Idempotency-Key": "deploy-43"])
            #expect(fresh.status == 201)
            #expect(try await client.listKeys().keys.filter { $0.name == "once" }.count == 2)
            // Another token's retry with the same key is its own request.
            let made = try await call(
                api, "POST", "/v1/admin-tokens", token: token, body: ["name": "second", "scope": "keys"])
            let second = try #require(made["secret"] as? String)
            let theirs = try await call(
                api, "POST", "/v1/keys", token: second, body: body, headers: ["Idempotency-Key": "deploy-42"])
            #expect(theirs.status == 201 && theirs["secret"] as? String != firstJSON?["secret"] as? String)
        }
    }

    @Test func badBodiesAreRefusedWithTheFieldNamed() async throws {
        try await withAdminAPI { server, api, client in
            let token = server.adminToken
            let cases: [(Any, String)] = [
                (["name": "x", "permisions": ["jobs:read"]], "permisions"),
                (["name": 7, "permissions": ["jobs:read"]], "name"),
                (["name": "x", "permissions": "jobs:read"], "permissions"),
                (["name": "x", "permissions": ["jobs:read"], "expires_at": "tomorrow"], "expires_at"),
                (["name": "x", "permissions": ["jobs:read"], "rate_limit": ["requests": 5, "per": 1]], "per"),
                (["name": "x", "permissions": ["jobs:read"], "allowed_networks": NSNull()], "allowed_networks"),
                (["permissions": ["jobs:read"]], "name"),
                (["name": "x", "permissions": ["no:such"]], "no:such"),
            ]
            for (body, field) in cases {
                let reply = try await call(api, "POST", "/v1/keys", token: token, body: body)
                #expect(reply.status == 400 && reply["code"] as? String == "INVALID_ARGUMENT", "\(reply.text)")
                #expect((reply["detail"] as? String ?? "").contains(field), "\(field): \(reply.text)")
                #expect(!reply.text.contains(server.dataDirectory) && !reply.text.lowercased().contains("sqlite"))
            }
            // Not JSON, or not an object, or JSON under another content type.
            let raw: [(String, String, Int)] = [
                ("{\"name\":", "application/json", 400), ("[1,2]", "application/json", 400),
                ("name=x&permissions=jobs:read", "application/x-www-form-urlencoded", 415),
                ("{\"name\":\"x\",\"permissions\":[\"jobs:read\"]}", "text/plain", 415),
            ]
            for (body, type, status) in raw {
                let reply = try await HTTPProbe.request(
                    port: api.port, method: "POST", path: "/v1/keys",
                    headers: ["Authorization": "Bearer \(token)", "Content-Type": type], body: body)
                #expect(reply.status == status, "\(type) \(body): \(reply.status) \(reply.body)")
            }
            // Deep nesting: refused as a bad body, the server unharmed.
            let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
            let nested = try await HTTPProbe.request(
                port: api.port, method: "POST", path: "/v1/keys",
                headers: ["Authorization": "Bearer \(token)", "Content-Type": "application/json"],
                body: "{\"name\":\"x\",\"permissions\":\(deep)}")
            #expect(nested.status == 400 || nested.status == 413, "\(nested.status) \(nested.body)")
            #expect(try await client.listKeys().keys.isEmpty)
            // A name taken by another admin token: a conflict, not a storage error.
            let taken = try await call(
                api, "POST", "/v1/admin-tokens", token: token, body: ["name": "bootstrap", "scope": "read"])
            #expect(taken.status == 409 && taken["code"] as? String == "FAILED_PRECONDITION", "\(taken.text)")
        }
    }

    @Test func credentialsInTheURLAndForeignOriginsAreRefused() async throws {
        try await withAdminAPI { server, api, client in
            let token = server.adminToken
            for query in ["access_token=\(token)", "token=x", "q=\(token)"] {
                let reply = try await call(
                    api, "POST", "/v1/keys?\(query)", token: token, body: ["name": "url", "permissions": ["jobs:read"]])
                #expect(reply.status == 400 && (reply["detail"] as? String ?? "").contains("Authorization header"))
            }
            #expect(try await client.listKeys().keys.isEmpty)
            // No CORS: a preflight from a foreign origin gets no Access-Control-Allow-Origin, and
            // neither does a request carrying an Origin.
            let preflight = try await HTTPProbe.request(
                port: api.port, method: "OPTIONS", path: "/v1/keys",
                headers: [
                    "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                ])
            #expect(preflight.status == 405 && preflight.headers["access-control-allow-origin"] == nil, "\(preflight)")
            #expect(preflight.headers["allow"] == "GET, POST")
            let withOrigin = try await call(
                api, "GET", "/v1/keys", token: token, headers: ["Origin": "https://evil.example"])
            #expect(withOrigin.status == 200 && withOrigin.headers["access-control-allow-origin"] == nil)
            // Unknown paths and a bare token: problem details, no internals.
            let unknown = try await call(api, "GET", "/v1/nothing", token: token)
            #expect(unknown.status == 404 && unknown["code"] as? String == "NOT_FOUND")
            let anonymous = try await call(api, "GET", "/v1/keys", token: nil)
            #expect(anonymous.status == 401 && anonymous.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
            let wrong = try await call(api, "GET", "/v1/keys", token: "adm_notatoken")
            #expect(wrong.status == 401 && wrong["code"] as? String == "UNAUTHENTICATED")
        }
    }

    /// A 10 MB body is answered 413 after its first 64 KiB and creates nothing. (Its own server,
    /// with the default request timeout: on a loaded machine a 1 s timeout could end the
    /// request before its 413, which is the other test's subject.)
    @Test func aHugeBodyIsRefusedEarly() async throws {
        try await withAdminAPI { server, api, client in
            let token = server.adminToken
            // 10 MB announced and sent: 413 after the first 64 KiB, nothing created.
            let big = try await offThePool { () throws -> (Int, Bool) in
                let connection = try RawConnection(port: api.port, receiveTimeoutSeconds: 10)
                let head =
                    "POST /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n"
                    + "Content-Type: application/json\r\nContent-Length: 10485760\r\n\r\n"
                connection.send(Array(head.utf8))
                let chunk = [UInt8](repeating: UInt8(ascii: " "), count: 65_536)
                // Until the answer comes: once the server closes, what is still sent would reset
                // the connection and lose the answer unread.
                for _ in 0..<160 where !connection.hasBytesToRead(waitingMS: 0) { connection.send(chunk) }
                let reply = String(decoding: connection.receiveToEnd(), as: UTF8.self)
                return (Int(reply.split(separator: " ").dropFirst().first ?? "") ?? 0, reply.contains("problem+json"))
            }
            #expect(big.0 == 413 && big.1, "\(big)")
            #expect(try await client.listKeys().keys.isEmpty)
        }
    }

    /// A body trickled a byte at a time: the connection is closed at the request timeout.
    @Test func aTrickledBodyEndsAtTheRequestTimeout() async throws {
        try await withAdminAPI(requestTimeout: .seconds(1)) { server, api, client in
            let token = server.adminToken
            let trickled = try await offThePool { () throws -> Double? in
                let connection = try RawConnection(port: api.port, receiveTimeoutSeconds: 10)
                let head =
                    "POST /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n"
                    + "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                connection.send(Array(head.utf8))
                let start = Date()
                while Date().timeIntervalSince(start) < 8 {
                    connection.send([UInt8(ascii: " ")])
                    if connection.isClosedByPeer(waitingMS: 200) { return Date().timeIntervalSince(start) }
                }
                return nil
            }
            let seconds = try #require(trickled, "a trickled body kept its connection for 8 s")
            #expect(seconds < 4)
            #expect(try await client.listKeys().keys.isEmpty)
            #expect(try await call(api, "GET", "/v1/keys", token: token).status == 200)
        }
    }

    /// `name_contains` finds keys across pages of the listing (ignoring case), and its token
    /// continues the search; `GET /v1/audit-chain/verify` gives the server's verdict on its chain,
    /// and a broken chain is an answer, not an error.
    @Test func keysAreSearchedByNameAndTheChainIsVerifiedOnRequest() async throws {
        try await withAdminAPI { server, api, client in
            let token = server.adminToken
            for index in 0..<30 {
                _ = try await client.createKey(
                    name: index % 10 == 3 ? "Deploy-\(index)" : "other-\(index)", permissions: ["jobs:read"])
            }
            var names: [String] = []
            var pageToken = ""
            var requests = 0
            repeat {
                let reply = try await call(
                    api, "GET", "/v1/keys?name_contains=deploy&page_size=2&page_token=\(pageToken)", token: token)
                #expect(reply.status == 200, "\(reply.text)")
                names += ((reply["keys"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String }
                pageToken = reply["next_page_token"] as? String ?? ""
                requests += 1
            } while !pageToken.isEmpty && requests < 20
            #expect(names.sorted() == ["Deploy-13", "Deploy-23", "Deploy-3"], "\(names)")
            #expect(requests >= 2, "the search was not paged")
            let tooLong = try await call(
                api, "GET", "/v1/keys?name_contains=\(String(repeating: "x", count: 101))", token: token)
            #expect(tooLong.status == 400 && tooLong["code"] as? String == "INVALID_ARGUMENT", "\(tooLong.text)")

            let verified = try await call(api, "GET", "/v1/audit-chain/verify", token: token)
            #expect(verified.status == 200 && verified["verified"] as? Bool == true, "\(verified.text)")
            #expect((verified["links"] as? Int ?? 0) >= 30)
            let db = try SQLiteConnection(path: server.dataDirectory + "/apikeys.sqlite", create: false)
            try db.execute("UPDATE audit_events SET actor = 'nobody' WHERE action = 'key.created'")
            db.close()
            // Within a minute the verdict is answered again (a walk reads the whole trail)...
            let reused = try await call(api, "GET", "/v1/audit-chain/verify", token: token)
            #expect(reused["verified"] as? Bool == true)
            #expect(reused["checked_at_ms"] as? Int == verified["checked_at_ms"] as? Int)
            // ...and a minute later the trail is walked again.
            server.clock.advance(byMS: 61_000)
            let broken = try await call(api, "GET", "/v1/audit-chain/verify", token: token)
            #expect(broken.status == 200 && broken["verified"] as? Bool == false, "\(broken.text)")
            #expect(
                broken["broken_at"] as? Int != nil && (broken["reason"] as? String)?.contains("do not hash") == true)
        }
    }

    /// Past the connection cap, a new connection takes the slot of a slow or silent one, which
    /// is closed: the one waiting longest on an incomplete request first, else the one idle
    /// longest. An operator is served at once, not after the flood's request timeout (30 s
    /// here: before, the newcomer waited in the listen backlog until a silent connection reached
    /// it). A silent connection still frees its slot at the request timeout of its own.
    @Test func slowAndSilentConnectionsGiveWayToANewOne() async throws {
        try await withAdminAPI(requestTimeout: .seconds(30), maxConnections: 4) { server, api, _ in
            var held: [RawConnection] = []
            for _ in 0..<4 {  // apart, so that their ages tell them apart
                held.append(try RawConnection(port: api.port, receiveTimeoutSeconds: 10))
                try await Task.sleep(for: .milliseconds(30))
            }
            // The youngest is slow: its request's head sent, its body never finished.
            held[3].send(Array("POST /v1/keys HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{".utf8))
            try await Task.sleep(for: .milliseconds(200))
            for round in 1...3 {
                // Each probe's connection closes after its answer: one more held one keeps the port full.
                if round > 1 { held.append(try RawConnection(port: api.port, receiveTimeoutSeconds: 10)) }
                try await Task.sleep(for: .milliseconds(50))
                let start = ContinuousClock.now
                let reply = try await call(api, "GET", "/v1/policy", token: server.adminToken)
                #expect(reply.status == 200)
                #expect(ContinuousClock.now - start < .seconds(2), "round \(round): \(ContinuousClock.now - start)")
            }
            // Gave way: the slow one, then the two idle longest. Still held: the rest.
            for (index, closed) in [(3, true), (0, true), (1, true), (2, false), (4, false), (5, false)] {
                #expect(held[index].isClosedByPeer(waitingMS: closed ? 2000 : 100) == closed, "connection \(index)")
            }
        }
        try await withAdminAPI(requestTimeout: .seconds(1)) { _, api, _ in
            let silent = try RawConnection(port: api.port, receiveTimeoutSeconds: 10)
            #expect(silent.isClosedByPeer(waitingMS: 3000))
        }
    }

    /// The port's rate limit: past it (here 2 a second, bursts of 4; one caller gets half of
    /// that), 429 with Retry-After, and the port serves again once the rate allows. The 30
    /// requests go at once, so the test does not depend on how fast a loaded machine sends them
    /// one by one.
    @Test func aFloodOfAdminRequestsIsHeldToTheRate() async throws {
        try await withAdminAPI(requestsPerSecond: 2) { server, api, _ in
            let token = server.adminToken
            let replies = try await withThrowingTaskGroup(of: Reply.self) { group in
                for _ in 0..<30 { group.addTask { try await self.call(api, "GET", "/v1/policy", token: token) } }
                return try await group.reduce(into: [Reply]()) { $0.append($1) }
            }
            let served = replies.filter { $0.status == 200 }.count
            #expect(served >= 2 && served < 30, "\(replies.map(\.status))")
            #expect(Set(replies.map(\.status)) == [200, 429])
            let refused = try #require(replies.first { $0.status == 429 })
            #expect(refused["code"] as? String == "RESOURCE_EXHAUSTED" && refused.headers["retry-after"] != nil)
            try await Task.sleep(for: .milliseconds(2100))
            #expect(try await call(api, "GET", "/v1/policy", token: token).status == 200)
        }
    }

    /// Anyone who can reach the port can send requests: a flood without a valid token (none, or
    /// a made-up one) gets at most half the port's rate, and operators (a token seen valid, a
    /// console session) are answered throughout, a token live when the server started from its
    /// first call. Here 10 a second, bursts of 20; unverified callers 5 a second, bursts of 10.
    @Test func aFloodWithoutAValidTokenDoesNotLockOperatorsOut() async throws {
        let metrics = HTTPFrontend.makeMetrics()
        try await withAdminAPI(requestsPerSecond: 10, metrics: metrics) { server, api, _ in
            let operatorToken = server.adminToken  // live at start, not presented before the flood
            // A console session, signed in with another token.
            let consoleToken = try await server.server.service.createAdminToken(
                name: "console-user", grant: .full, actor: "test")
            let origin = ["Origin": "http://127.0.0.1:\(api.port)"]
            let signIn = try await call(
                api, "POST", "/console/session", token: nil, body: ["token": consoleToken], headers: origin)
            #expect(signIn.status == 200, "\(signIn.text)")
            let cookie = try #require(signIn.headers["set-cookie"]?.split(separator: ";").first.map(String.init))
            try await Task.sleep(for: .milliseconds(1100))

            let madeUp = KeyService.adminTokenFormat.generate()
            let started = ContinuousClock.now
            let flood = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<80 {
                    group.addTask {
                        try await self.call(api, "GET", "/v1/keys", token: index % 2 == 0 ? nil : madeUp).status
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            let seconds = (ContinuousClock.now - started) / .seconds(1)
            let answered = flood.filter { $0 != 429 }.count
            #expect(Set(flood).isSubset(of: [401, 429]) && flood.contains(429), "\(flood)")
            // The unverified burst, and what its rate refilled while the flood ran.
            #expect(answered <= 10 + Int(5 * seconds) + 1, "\(answered) answered in \(seconds) s")

            for _ in 0..<5 {
                let reply = try await call(api, "GET", "/v1/policy", token: operatorToken)
                #expect(reply.status == 200, "\(reply.status) \(reply.text)")
            }
            for _ in 0..<3 {
                let reply = try await call(api, "GET", "/v1/policy", token: nil, headers: ["Cookie": cookie])
                #expect(reply.status == 200, "\(reply.status) \(reply.text)")
            }
            // Refusals are counted by caller, for operators to see the flood.
            var exposition: [UInt8] = []
            metrics.registry.emit(into: &exposition)
            let text = String(decoding: exposition, as: UTF8.self)
            let refused = flood.filter { $0 == 429 }.count
            #expect(
                text.contains("apikeyd_admin_api_requests_refused_total{caller=\"unverified\"} \(refused)\n"), "\(text)"
            )
            #expect(text.contains("apikeyd_admin_api_requests_refused_total{caller=\"verified\"} 0\n"), "\(text)")
        }
    }

    /// No one token takes the whole rate either: a read-only token given to a script that runs
    /// away gets at most half, and the operator's token is answered meanwhile. Here 10 a second;
    /// each caller 5 a second, bursts of 10.
    @Test func oneTokenCannotTakeTheWholeRate() async throws {
        try await withAdminAPI(requestsPerSecond: 10) { server, api, _ in
            let script = try await server.server.service.createAdminToken(
                name: "script", grant: AdminGrant(scope: .read), actor: "test")
            #expect(try await call(api, "GET", "/v1/keys", token: script).status == 200)  // now seen valid
            try await Task.sleep(for: .milliseconds(1100))
            let started = ContinuousClock.now
            let flood = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<60 { group.addTask { try await self.call(api, "GET", "/v1/keys", token: script).status } }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            let seconds = (ContinuousClock.now - started) / .seconds(1)
            let answered = flood.filter { $0 == 200 }.count
            #expect(Set(flood) == [200, 429], "\(flood)")
            #expect(answered <= 10 + Int(5 * seconds) + 1, "\(answered) answered in \(seconds) s")
            for _ in 0..<5 {
                let reply = try await call(api, "GET", "/v1/policy", token: server.adminToken)
                #expect(reply.status == 200, "\(reply.status) \(reply.text)")
            }
        }
    }

    @Test(.enabled(if: interopPython != nil))
    func theAdminAPIServesTLS() async throws {
        let dir = try makeTemporaryDirectory("apikeyd-admin-tls")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certificates = try TestCertificates.make(in: dir)
        let files = TLSFiles(certificate: certificates.serverCertificate, privateKey: certificates.serverKey)
        try await withAdminAPI(tls: files) { server, api, _ in
            #expect(api.scheme == "https")
            let script = """
                import json, ssl, sys, urllib.request
                context = ssl.create_default_context(cafile=sys.argv[1])
                request = urllib.request.Request(sys.argv[2], headers={"Authorization": "Bearer " + sys.argv[3]})
                with urllib.request.urlopen(request, context=context) as reply:
                    print(reply.status, json.load(reply)["name"])
                """
            let run = try await runCommand(
                interopPython!,
                [
                    "-c", script, certificates.caCertificate, "https://127.0.0.1:\(api.port)/v1/whoami",
                    server.adminToken,
                ])
            #expect(run.status == 0 && run.stdout.contains("200 bootstrap"), "\(run.stdout)\(run.stderr)")
            // Plain HTTP to the TLS port gets no answer.
            let plain = try? await HTTPProbe.request(port: api.port, path: "/v1/whoami")
            #expect(plain == nil || plain?.status != 200)
        }
    }
}
