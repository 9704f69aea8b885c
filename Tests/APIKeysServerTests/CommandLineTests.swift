import APIKeysClient
import APIKeysCore
import APIKeysServer
@_spi(Testing) import APIKeysStore
import APIKeysTestSupport
import Foundation
import Testing

/// Drives the server through the built `apikey` binary, as an operator would.
@Suite struct CommandLineTests {
    /// The `apikey` executable built beside this test bundle.
    static let binary = productsDirectory.appendingPathComponent("apikey")

    private func apikey(_ arguments: [String], server: TestServer, stdin: String? = nil) async throws -> CommandResult {
        try await runCommand(
            Self.binary, arguments,
            environment: [
                "APIKEY_SERVER": "127.0.0.1:\(server.port)",
                "APIKEY_TOKEN_FILE": server.dataDirectory + "/admin.token",
            ], stdin: stdin)
    }

    private func secret(in output: String) -> String? {
        output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first {
            $0.hasPrefix("dbm_") && $0.count == 50
        }
    }

    /// `apikey admin-token create|list|revoke` and `apikey whoami`: a `keys` token with a ceiling
    /// minted over RPC, shown once (`--json` for scripts), listed without its secret, used, revoked.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: binary.path)))
    func adminTokensAreManagedOverRPC() async throws {
        try await withServer { server, client in
            let created = try await apikey(
                [
                    "admin-token", "create", "deployer", "--scope", "keys", "--ceiling", "jobs:execute, history:read",
                    "--max-key-lifetime", "1d", "--expires", "30d", "--json",
                ], server: server)
            #expect(created.status == 0, "\(created.stderr)")
            struct Issued: Decodable {
                struct Token: Decodable {
                    let name, scope: String
                    let ceiling: [String]
                    let max_key_lifetime_ms: Int64
                    let expires_at: String?
                }
                let token: Token
                let secret: String
            }
            let issued = try JSONDecoder().decode(Issued.self, from: Data(created.stdout.utf8))
            #expect(issued.secret.hasPrefix("adm_"))
            #expect(issued.token.name == "deployer" && issued.token.scope == "keys")
            #expect(
                issued.token.ceiling == ["history:read", "jobs:execute"]
                    && issued.token.max_key_lifetime_ms == 86_400_000)
            #expect(issued.token.expires_at != nil)

            let listed = try await apikey(["admin-token", "list"], server: server)
            #expect(listed.status == 0 && listed.stdout.contains("deployer") && listed.stdout.contains("bootstrap"))
            #expect(!listed.stdout.contains(issued.secret), "the secret is shown once")

            let whoami = try await runCommand(
                Self.binary, ["whoami"],
                environment: ["APIKEY_SERVER": "127.0.0.1:\(server.port)", "APIKEY_ADMIN_TOKEN": issued.secret])
            #expect(whoami.status == 0 && whoami.stdout.contains("deployer") && whoami.stdout.contains("keys"))
            let wider = try await runCommand(
                Self.binary, ["create", "wide", "-p", "vault:read", "--expires", "12h"],
                environment: ["APIKEY_SERVER": "127.0.0.1:\(server.port)", "APIKEY_ADMIN_TOKEN": issued.secret])
            #expect(wider.status == 2 && wider.stderr.contains("PERMISSION_DENIED"), "\(wider.stderr)")

            let revoked = try await apikey(["admin-token", "revoke", "deployer"], server: server)
            #expect(revoked.status == 0)
            #expect(try await client.listAdminTokens().map(\.name) == ["bootstrap"])
        }
    }

    /// `apikey report-leak` needs no admin token, and prints the same line for a key and a non-key.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: binary.path)))
    func aLeakIsReportedWithoutAToken() async throws {
        try await withServer { server, client in
            let issued = try await client.createKey(name: "leaky", permissions: ["jobs:read"])
            let environment = [
                "APIKEY_SERVER": "127.0.0.1:\(server.port)", "APIKEY_TOKEN_FILE": "/nonexistent/admin.token",
            ]
            let reported = try await runCommand(
                Self.binary, ["report-leak", "-", "--source", "https://example.com/leak"], environment: environment,
                stdin: issued.secret + "\n")
            let unknown = try await runCommand(
                Self.binary, ["report-leak", server.server.service.format.generate()], environment: environment)
            #expect(reported.status == 0 && unknown.status == 0, "\(reported.stderr)\(unknown.stderr)")
            #expect(reported.stdout == unknown.stdout)
            #expect(try await client.check(key: issued.secret).reason == .disabled)
        }
    }

    /// `apikey audit verify` holds on an untouched trail; `apikey audit export` is verified by an
    /// independent script (Tests/interop/verify_audit_export.py); one row edited with `sqlite3`
    /// breaks the chain at its link, and both say so.
    @Test(
        .enabled(if: FileManager.default.isExecutableFile(atPath: binary.path)),
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/sqlite3")))
    func anEditedAuditRowBreaksTheChainThere() async throws {
        try await withServer { server, client in
            let issued = try await client.createKey(name: "chained", permissions: ["jobs:read"])
            for index in 0..<300 {
                _ = try await client.check(key: issued.secret, permissions: ["jobs:read"], resource: "GET /\(index)")
            }
            _ = try await client.check(key: "dbm_" + String(repeating: "x", count: 46))
            _ = try await client.setKeyEnabled(id: issued.key.id, enabled: false)
            await server.server.service.flushAuditTrail()

            var verify = try await apikey(["audit", "verify"], server: server)
            #expect(
                verify.status == 0 && verify.stdout.contains("audit chain verified"), "\(verify.stdout)\(verify.stderr)"
            )
            let exportFile = server.dataDirectory + "/export.jsonl"
            var export = try await apikey(["audit", "export", "--format", "jsonl"], server: server)
            #expect(export.status == 0, "\(export.stderr)")
            try export.stdout.write(toFile: exportFile, atomically: true, encoding: .utf8)
            var external = try await runCommand(Self.python, [Self.exportVerifier.path, exportFile])
            #expect(external.status == 0, "\(external.stdout)\(external.stderr)")
            let lines = export.stdout.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            #expect(lines.filter { $0["type"] as? String == "event" }.count >= 302)
            try await Self.verifierRefusesCutExports(export.stdout, in: server.dataDirectory)
            let created = try #require(lines.first { $0["action"] as? String == "key.created" })
            let link = try #require(created["link"] as? Int)

            let edit = try await runCommand(
                URL(fileURLWithPath: "/usr/bin/sqlite3"),
                [
                    server.dataDirectory + "/apikeys.sqlite",
                    "UPDATE audit_events SET actor = 'nobody' WHERE action = 'key.created'",
                ])
            #expect(edit.status == 0, "\(edit.stderr)")
            verify = try await apikey(["audit", "verify"], server: server)
            #expect(verify.status == 1, "\(verify.stdout)\(verify.stderr)")
            #expect(verify.stdout.contains("audit chain broken at link \(link):"), "\(verify.stdout)")
            export = try await apikey(["audit", "export"], server: server)
            #expect(export.status == 1 && export.stderr.contains("broken at link \(link):"), "\(export.stderr)")
            try export.stdout.write(toFile: exportFile, atomically: true, encoding: .utf8)
            external = try await runCommand(Self.python, [Self.exportVerifier.path, exportFile])
            #expect(external.status == 1 && external.stdout.contains("link \(link):"), "\(external.stdout)")
        }
    }

    /// Control characters stored before Check refused them (written here with `sqlite3`): a key
    /// name and an event's resource and detail holding ESC sequences, CR, LF, BEL and a C1 CSI.
    /// `apikey list`, `report` and `audit` show them escaped; `--json` keeps them exact.
    @Test(
        .enabled(if: FileManager.default.isExecutableFile(atPath: binary.path)),
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/sqlite3")))
    func storedControlCharactersAreShownEscaped() async throws {
        try await withServer { server, client in
            let issued = try await client.createKey(name: "plain", permissions: ["jobs:read"])
            await server.server.service.flushAuditTrail()
            let hostile =
                "x' || char(27) || '[2J' || char(27) || '[31mFAKE' || char(10) || 'line2' || char(13) || char(7) || char(155) || 'y"
            let edit = try await runCommand(
                URL(fileURLWithPath: "/usr/bin/sqlite3"),
                [
                    server.dataDirectory + "/apikeys.sqlite",
                    """
                    UPDATE keys SET name = '\(hostile)' WHERE id = '\(issued.key.id)';
                    UPDATE audit_events SET detail = '\(hostile)', resource = '\(hostile)' WHERE action = 'key.created';
                    """,
                ])
            #expect(edit.status == 0, "\(edit.stderr)")
            for arguments in [["list"], ["report"], ["audit"], ["show", issued.key.id]] {
                let run = try await apikey(arguments, server: server)
                #expect(run.status == 0, "\(arguments): \(run.stderr)")
                let controls = run.stdout.unicodeScalars.filter {
                    ($0.value < 0x20 && $0 != "\n") || (0x7F...0x9F).contains($0.value)
                }
                #expect(controls.isEmpty, "\(arguments) printed \(controls.map(\.value))")
                #expect(
                    run.stdout.contains(#"\x1b[2J\x1b[31mFAKE\x0aline2\x0d\x07\x9by"#), "\(arguments): \(run.stdout)")
            }
            let json = try await apikey(["list", "--json"], server: server)
            #expect(json.stdout.contains(#"\u001b[2J"#), "\(json.stdout)")
        }
    }

    /// The independent verifier refuses an export with links cut from the front, an event after
    /// the last link, no link while the head is past the anchor, or an anchor that the first link
    /// does not follow; with --partial (an export made with --since) a later start is allowed.
    static func verifierRefusesCutExports(_ export: String, in directory: String) async throws {
        let lines = export.split(separator: "\n").map(String.init)
        let firstLink = try #require(lines.firstIndex { $0.contains(#""type":"link""#) })
        let lastEvent = try #require(lines.last { $0.contains(#""type":"event""#) })
        let chain = lines[0]
        let anchorHash = try #require(chain.firstMatch(of: /"anchor":\{"hash":"([0-9a-f]*)"/)?.1)
        let otherHash = String(repeating: "e", count: 64)
        let variants: [(String, [String], [String], String)] = [
            ("front cut", [chain] + lines[(firstLink + 1)...], [], "links are missing at the front"),
            ("event appended", lines + [lastEvent], [], "after the last link"),
            ("no link", [chain], [], "no link, but the head is link"),
            (
                "anchor changed",
                [chain.replacingOccurrences(of: "\"hash\":\"\(anchorHash)\"", with: "\"hash\":\"\(otherHash)\"")]
                    + lines.dropFirst(), [], "does not follow the anchor"
            ),
            ("front cut, partial", [chain] + lines[(firstLink + 1)...], ["--partial"], ""),
        ]
        for (label, variant, options, says) in variants {
            let file = directory + "/variant.jsonl"
            try variant.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
            let run = try await runCommand(python, [exportVerifier.path] + options + [file])
            if says.isEmpty {
                #expect(run.status == 0, "\(label): \(run.stdout)\(run.stderr)")
            } else {
                #expect(run.status == 1 && run.stdout.contains(says), "\(label): \(run.stdout)\(run.stderr)")
            }
        }
    }

    static let python = interopPython ?? URL(fileURLWithPath: "/usr/bin/python3")
    static let exportVerifier = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("interop/verify_audit_export.py")

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: binary.path)))
    func operatorWalkthrough() async throws {
        try await withServer { server, _ in
            let created = try await apikey(
                ["create", "ci-pipeline", "--permission", "jobs:read", "-p", "jobs:execute", "--expires", "90d"],
                server: server)
            #expect(created.status == 0, "\(created.stderr)")
            #expect(created.stdout.contains("copy it now, it will not be shown again"))
            let key = try #require(secret(in: created.stdout))
            let id = try #require(created.stdout.split(separator: " ").first { $0.hasPrefix("key_") }.map(String.init))

            var run = try await apikey(["check", key, "-p", "jobs:read"], server: server)
            #expect(run.status == 0 && run.stdout.hasPrefix("ALLOW 200"))
            run = try await apikey(["check", "-", "-p", "vault:read"], server: server, stdin: key + "\n")
            #expect(run.status == 1 && run.stdout.contains("MISSING_PERMISSION") && run.stdout.contains("vault:read"))

            #expect(try await apikey(["disable", id], server: server).status == 0)
            run = try await apikey(["check", key], server: server)
            #expect(run.status == 1 && run.stdout.contains("DENY 401 DISABLED"))
            #expect(try await apikey(["enable", id], server: server).status == 0)

            let rotated = try await apikey(["rotate", id], server: server)
            let newKey = try #require(secret(in: rotated.stdout))
            #expect(try await apikey(["check", key], server: server).stdout.contains("UNKNOWN_KEY"))
            #expect(try await apikey(["check", newKey, "-p", "jobs:execute"], server: server).status == 0)

            let list = try await apikey(["list", "--json"], server: server)
            let keys = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]]
            #expect(keys?.first?["id"] as? String == id)
            #expect(keys?.first?["hint"] as? String == String(newKey.prefix(8)) + "…")
            #expect(!list.stdout.contains(newKey))

            run = try await apikey(["permissions"], server: server)
            #expect(run.stdout.contains("storage:write"))
            await server.server.service.flushAuditTrail()
            run = try await apikey(["audit", "--key", id], server: server)
            #expect(run.stdout.contains("key.rotated") && run.stdout.contains("api.request"))
            // It says since when the server keeps events, and for how long (the default: 30 days).
            #expect(
                run.stdout.contains("(events kept since ") && run.stdout.contains("; retention 30d)"), "\(run.stdout)")

            run = try await apikey(["delete", id], server: server, stdin: "n\n")
            #expect(run.status == 2 && run.stderr.contains("not deleted"))
            #expect(try await apikey(["delete", id, "--yes"], server: server).status == 0)
            #expect(try await apikey(["check", newKey], server: server).status == 1)

            run = try await apikey(["show", id], server: server)
            #expect(run.status == 2)
            #expect(run.stderr.split(separator: "\n").count == 1 && run.stderr.contains("NOT_FOUND"))
            run = try await apikey(["create", "x", "-p", "nope:nope"], server: server)
            #expect(run.status == 2 && run.stderr.contains("INVALID_ARGUMENT") && run.stderr.contains("nope:nope"))
            run = try await apikey(["list", "--token", "adm_wrong"], server: server)
            #expect(run.status == 2 && run.stderr.contains("UNAUTHENTICATED"))
        }
    }

    private func object(_ run: CommandResult) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.stdout)")
    }

    /// Every command that prints takes --json: one JSON document on stdout, what CI scripts parse.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: binary.path)))
    func everyCommandSpeaksJSONForScripts() async throws {
        try await withServer { server, _ in
            let created = try object(
                try await apikey(["create", "ci", "-p", "jobs:execute", "--json"], server: server))
            let secret = try #require(created["secret"] as? String)
            let key = try #require(created["key"] as? [String: Any])
            let id = try #require(key["id"] as? String)
            #expect(secret.hasPrefix("dbm_") && key["permissions"] as? [String] == ["jobs:execute"])
            // Names as the proto spells them; each time also in ISO 8601, absent when not set.
            let createdMS = try #require((key["created_at_ms"] as? NSNumber)?.int64Value)
            let createdISO = try #require(key["created_at"] as? String)
            let parser = ISO8601DateFormatter()
            parser.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            #expect(parser.date(from: createdISO).map { Int64($0.timeIntervalSince1970 * 1000) } == createdMS)
            #expect(key["expires_at"] == nil && key["expires_at_ms"] as? Int == 0)
            #expect(key.keys.allSatisfy { $0 == $0.lowercased() }, "\(key.keys)")

            var run = try await apikey(["check", secret, "-p", "jobs:execute", "--json"], server: server)
            var answer = try object(run)
            #expect(run.status == 0 && answer["decision"] as? String == "ALLOW" && answer["key_id"] as? String == id)
            run = try await apikey(
                ["check", secret, "-p", "vault:read", "-p", "jobs:execute", "--json"], server: server)
            answer = try object(run)
            #expect(run.status == 1 && answer["reason"] as? String == "MISSING_PERMISSION")
            #expect(
                answer["missing_permissions"] as? [String] == ["vault:read"] && answer["http_status"] as? Int == 403)

            let rotated = try object(try await apikey(["rotate", id, "--json"], server: server))
            #expect((rotated["secret"] as? String).map { $0 != secret && $0.hasPrefix("dbm_") } == true)
            let disabled = try object(try await apikey(["disable", id, "--json"], server: server))
            #expect(disabled["enabled"] as? Bool == false)
            let updated = try object(try await apikey(["update", id, "--name", "ci-2", "--json"], server: server))
            #expect(updated["name"] as? String == "ci-2")
            let shown = try object(try await apikey(["show", id, "--json"], server: server))
            #expect(shown["name"] as? String == "ci-2" && shown["enabled"] as? Bool == false)
            run = try await apikey(["permissions", "--json"], server: server)
            let catalog = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [[String: String]]
            #expect(catalog?.count == 10 && catalog?.first?["name"] == "jobs:read")
            await server.server.service.flushAuditTrail()
            run = try await apikey(["audit", "--key", id, "--json"], server: server)
            let events = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [[String: Any]]
            #expect((events?.count ?? 0) >= 5)
            #expect(
                events?.allSatisfy { $0["at_ms"] is NSNumber && $0["at"] is String && $0["key_id"] as? String == id }
                    == true)
            let deleted = try object(try await apikey(["delete", id, "--yes", "--json"], server: server))
            #expect(deleted["deleted"] as? String == id)
        }
    }

    /// A key made 40 days ago (the injected clock) with the default retentions: `apikey audit
    /// --key` still shows who created it and with which permissions after its checks were
    /// pruned, and `apikey audit verify` holds (the pruned checks are gaps the chain names).
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: binary.path)))
    func aKeysCreationOutlivesTheRetentionOfItsChecks() async throws {
        let clock = ManualWallClock(nowMS: Int64(Date().timeIntervalSince1970 * 1000) - 40 * 86_400_000)
        try await withServer(clock: clock) { server, client in
            let created = try await client.createKey(name: "ci", permissions: ["jobs:execute", "history:read"])
            for _ in 0..<20 { _ = try await client.check(key: created.secret, permissions: ["jobs:execute"]) }
            await server.server.service.flushAuditTrail()
            clock.advance(byMS: 40 * 86_400_000)
            _ = try await client.check(key: created.secret, permissions: ["jobs:execute"])
            await server.server.service.flushAuditTrail()
            try await offThePool { server.server.service.pruneAuditTrailNow() }

            let run = try await apikey(["audit", "--key", created.key.id, "--json"], server: server)
            #expect(run.status == 0, "\(run.stderr)")
            let events = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [[String: Any]] ?? []
            #expect(events.map { $0["action"] as? String } == ["api.request", "key.created"], "\(events)")
            let creationEvent = try #require(events.last)
            #expect(creationEvent["actor"] as? String == "bootstrap", "\(creationEvent)")
            #expect(creationEvent["permissions"] as? [String] == ["jobs:execute", "history:read"], "\(creationEvent)")
            let verified = try await apikey(["audit", "verify"], server: server)
            #expect(verified.status == 0, "\(verified.stdout) \(verified.stderr)")
            let all = try await apikey(["audit", "--action", "audit.pruned", "--json"], server: server)
            #expect(all.stdout.contains("events of links"), "\(all.stdout)")

            // The export carries the gap (pruned_from), and the independent script verifies it;
            // the same export with the key's creation made into a gap (its event removed) is refused.
            let export = try await apikey(["audit", "export", "--format", "jsonl"], server: server)
            #expect(export.status == 0 && export.stdout.contains("\"pruned_from\""), "\(export.stdout)")
            let exportFile = server.dataDirectory + "/export.jsonl"
            try export.stdout.write(toFile: exportFile, atomically: true, encoding: .utf8)
            var external = try await runCommand(Self.python, [Self.exportVerifier.path, exportFile])
            #expect(external.status == 0, "\(external.stdout)\(external.stderr)")
            var lines = try export.stdout.split(separator: "\n").map {
                try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] ?? [:]
            }
            let creation = try #require(lines.first { $0["action"] as? String == "key.created" })
            let creationLink = try #require(creation["link"] as? Int)
            lines.removeAll { $0["type"] as? String == "event" && $0["link"] as? Int == creationLink }
            for index in lines.indices where lines[index]["type"] as? String == "link" {
                if lines[index]["position"] as? Int == creationLink {
                    lines[index]["events"] = 0
                    lines[index]["pruned_from"] = creationLink
                }
            }
            let forged = try lines.map {
                String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self)
            }
            try forged.joined(separator: "\n").write(toFile: exportFile, atomically: true, encoding: .utf8)
            external = try await runCommand(Self.python, [Self.exportVerifier.path, exportFile])
            #expect(
                external.status == 1 && external.stdout.contains("no audit.pruned event records their pruning"),
                "\(external.stdout)\(external.stderr)")
        }
    }

    /// The CLI over TLS: --ca (and env), and a plain CLI refused by a TLS server in one line.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: binary.path)))
    func theCLISpeaksTLS() async throws {
        let dir = try makeTemporaryDirectory("apikey-cli-tls")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certificates = try TestCertificates.make(in: dir)
        try await withServer(configure: {
            $0.tls = .init(certificate: certificates.serverCertificate, privateKey: certificates.serverKey)
        }) { server, _ in
            var run = try await apikey(["permissions", "--ca", certificates.caCertificate, "--json"], server: server)
            #expect(run.status == 0, "\(run.stderr)")
            run = try await runCommand(
                Self.binary, ["create", "over-tls", "-p", "jobs:read"],
                environment: [
                    "APIKEY_SERVER": "127.0.0.1:\(server.port)",
                    "APIKEY_TOKEN_FILE": server.dataDirectory + "/admin.token",
                    "APIKEY_CA": certificates.caCertificate,
                ])
            #expect(run.status == 0 && secret(in: run.stdout) != nil, "\(run.stderr)")
            run = try await apikey(["permissions", "--timeout", "2"], server: server)
            #expect(run.status == 2 && run.stderr.split(separator: "\n").count == 1, "\(run.stderr)")
        }
    }
}
