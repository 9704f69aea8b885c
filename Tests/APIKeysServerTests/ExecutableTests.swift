@testable import APIKeysClient
import APIKeysTestSupport
import Foundation
import Testing

/// The built `apikeyd` executable: a permission catalog from a file, admin tokens made by the
/// local command that work in a running server at once, and a graceful SIGTERM with the audit
/// trail written.
@Suite struct ExecutableTests {
    static let apikeyd = productsDirectory.appendingPathComponent("apikeyd")

    /// Runs `apikeyd` with `arguments` to completion; returns its exit status and standard output.
    private func runApikeyd(_ arguments: [String]) async throws -> (Int32, String) {
        let run = try await runCommand(Self.apikeyd, arguments)
        return (run.status, run.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// A running `apikeyd` and what it has logged so far.
    final class RunningServer {
        let process = ChildProcess()
        let log = privatePipe()
        var logText = ""
        var port = 0

        /// Starts `apikeyd` with `arguments` (and `environment` added to this process's) and reads
        /// its log until it says its port (text or JSON).
        init(_ arguments: [String], environment: [String: String] = [:]) throws {
            process.executableURL = ExecutableTests.apikeyd
            process.arguments = arguments
            if !environment.isEmpty {
                process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            }
            process.standardError = log
            process.standardOutput = privatePipe()
            try process.run()
            while port == 0 {
                let chunk = log.fileHandleForReading.availableData
                guard !chunk.isEmpty else { break }
                logText += String(decoding: chunk, as: UTF8.self)
                let found = logText.firstMatch(of: /port=(\d+)/)?.1 ?? logText.firstMatch(of: /"port":"(\d+)"/)?.1
                port = found.flatMap { Int($0) } ?? 0
            }
            if port == 0 {
                process.terminate()
                throw CocoaError(
                    .fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: "no port in the log: \(logText)"])
            }
        }

        /// SIGTERM, then everything it logged.
        func stop() -> String {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
            logText += String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            return logText
        }

        deinit { if process.isRunning { process.terminate() } }
    }

    /// systemd's Type=notify (packaging/apikeyd.service): READY=1 once the port accepts,
    /// STOPPING=1 when SIGTERM begins the graceful shutdown, both as datagrams to NOTIFY_SOCKET.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: apikeyd.path)))
    func tellsTheServiceManagerWhenReadyAndWhenStopping() async throws {
        let dir = try makeTemporaryDirectory("apikeyd-notify")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let socketPath = dir + "/notify"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(socketPath.utf8) + [0]) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        try #require(bound == 0)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        func nextMessage() -> String {
            var buffer = [UInt8](repeating: 0, count: 256)
            let count = recv(fd, &buffer, buffer.count, 0)
            return count > 0 ? String(decoding: buffer.prefix(count), as: UTF8.self) : ""
        }

        let running = try RunningServer(
            ["--data-dir", dir + "/data", "--port", "0"], environment: ["NOTIFY_SOCKET": socketPath])
        let ready = try await offThePool { nextMessage() }
        #expect(ready == "READY=1")
        // Ready means serving: the port accepts and answers.
        let token = try String(contentsOfFile: dir + "/data/admin.token", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let client = APIKeysClient(configuration: .init(port: running.port, adminToken: token, timeout: .seconds(5)))
        #expect(try await client.listPermissions().count == 10)
        await client.close()
        let stopping = try await offThePool { () -> String in
            kill(running.process.processIdentifier, SIGTERM)
            return nextMessage()
        }
        #expect(stopping == "STOPPING=1")
        _ = running.stop()
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: apikeyd.path)))
    func localAdminTokensAndGracefulShutdown() async throws {
        let dir = try makeTemporaryDirectory("apikeyd-exe")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let catalogFile = dir + "/permissions.txt"
        try "# our own catalog\nreports:read  Read reports\nreports:write Write reports\n"
            .write(toFile: catalogFile, atomically: true, encoding: .utf8)
        let running = try RunningServer(["--data-dir", dir, "--port", "0", "--permissions-file", catalogFile])
        let server = running.process
        let (serverPort, logText) = (running.port, running.logText)
        #expect(logText.contains("\(dir)/admin.token"))
        let bootstrap = try String(contentsOfFile: dir + "/admin.token", encoding: .utf8)
        #expect(!logText.contains(bootstrap.trimmingCharacters(in: .whitespacesAndNewlines)))
        let mode = try FileManager.default.attributesOfItem(atPath: dir + "/admin.token")[.posixPermissions] as? Int
        #expect(mode == 0o600)

        // One server per data directory: a second one says who holds it and exits at once.
        let second = try await runCommand(Self.apikeyd, ["--data-dir", dir, "--port", "0"])
        #expect(second.status != 0)
        #expect(
            second.stderr.contains("in use by another apikeyd (pid \(server.processIdentifier))"), "\(second.stderr)")

        let (status, alice) = try await runApikeyd(["admin-token", "create", "alice", "--data-dir", dir])
        #expect(status == 0 && alice.hasPrefix("adm_"))
        let client = APIKeysClient(configuration: .init(port: serverPort, adminToken: alice))
        #expect(try await client.listPermissions().map(\.name) == ["reports:read", "reports:write"])
        await #expect { try await client.createKey(name: "old-catalog", permissions: ["jobs:read"]) } throws: {
            ($0 as? APIKeysClientError)?.code == .invalidArgument
        }
        let created = try await client.createKey(name: "made-by-alice", permissions: ["reports:read"])
        #expect(try await client.check(key: created.secret, permissions: ["reports:read"]).decision == .allow)
        let events = try await client.listAuditEvents(keyID: created.key.id).events
        #expect(events.last?.action == "key.created" && events.last?.actor == "alice")

        // A local token with a scope: it reads, and is refused what its scope does not reach.
        let (readStatus, auditor) = try await runApikeyd(
            ["admin-token", "create", "auditor", "--scope", "read", "--expires", "1d", "--data-dir", dir])
        #expect(readStatus == 0 && auditor.hasPrefix("adm_"))
        let listing = try await runApikeyd(["admin-token", "list", "--data-dir", dir]).1
        #expect(listing.contains("auditor\tscope read") && listing.contains("expires-at-ms"), "\(listing)")
        let reader = APIKeysClient(configuration: .init(port: serverPort, adminToken: auditor))
        #expect(try await reader.listKeys().keys.count == 1)
        await #expect { try await reader.deleteKey(id: created.key.id) } throws: {
            ($0 as? APIKeysClientError)?.code == .permissionDenied
        }
        await reader.close()
        #expect(try await runApikeyd(["admin-token", "revoke", "auditor", "--data-dir", dir]).0 == 0)

        #expect(try await runApikeyd(["admin-token", "revoke", "alice", "--data-dir", dir]).0 == 0)
        await #expect { try await client.listKeys() } throws: {
            ($0 as? APIKeysClientError)?.code == .unauthenticated
        }
        await client.close()

        // The token changes made beside the running server are in its audit trail, numbered by
        // it (the same sequence as its own events, so nothing collides), with who made them.
        let operatorClient = APIKeysClient(
            configuration: .init(
                port: serverPort, adminToken: bootstrap.trimmingCharacters(in: .whitespacesAndNewlines)))
        var tokenEvents: [AuditEvent] = []
        for action in ["admin_token.revoked", "admin_token.created"] {
            tokenEvents += try await operatorClient.listAuditEvents(action: action).events
        }
        #expect(
            tokenEvents.map { $0.detail.split(separator: " ").prefix(4).joined(separator: " ") } == [
                "admin token \"alice\" revoked", "admin token \"auditor\" revoked", "admin token \"auditor\" created",
                "admin token \"alice\" created", "admin token \"bootstrap\" created",
            ])
        #expect(tokenEvents.map(\.actor).prefix(2).allSatisfy { $0.hasPrefix("apikeyd admin-token (") })
        #expect(tokenEvents.last?.actor == "apikeyd (first start)")
        #expect(
            try await operatorClient.createKey(name: "after", permissions: ["reports:read"]).key.id.isEmpty == false)
        await operatorClient.close()

        let rest = running.stop()  // SIGTERM
        #expect(server.terminationStatus == 0)
        #expect(rest.contains("audit trail flushed, database closed"))
    }

    /// `--event-loops` sizes every port that serves checks: the HTTP port runs on as many loops as
    /// the RPC port, not on one per core whatever was asked (it did, on NIO's singleton group).
    /// Cannot fail on a one-core machine, where both counts are 1.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: apikeyd.path)))
    func eventLoopsSizeTheHTTPPortToo() async throws {
        let dir = try makeTemporaryDirectory("apikeyd-exe")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let running = try RunningServer(["--data-dir", dir, "--port", "0", "--http-port", "0", "--event-loops", "1"])
        while !running.logText.contains("HTTP port listening") {
            let chunk = running.log.fileHandleForReading.availableData
            guard !chunk.isEmpty else { break }
            running.logText += String(decoding: chunk, as: UTF8.self)
        }
        #expect(running.logText.contains("HTTP port listening"))
        let tasks = "/proc/\(running.process.processIdentifier)/task"
        let loops = try FileManager.default.contentsOfDirectory(atPath: tasks).filter { task in
            let name = (try? String(contentsOfFile: "\(tasks)/\(task)/comm", encoding: .utf8)) ?? ""
            return name.hasPrefix("NIO-")
        }
        #expect(loops.count == 2, "one event loop for each of the two ports, found \(loops.count)")
        _ = running.stop()
    }

    /// An idle server sleeps: none of its threads wakes more than a few times a second (its audit
    /// writer woke every 5 ms, 200 times a second, with nothing to write), and a check made
    /// after an idle spell is in the audit trail at once.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: apikeyd.path)))
    func anIdleServerSleeps() async throws {
        let dir = try makeTemporaryDirectory("apikeyd-exe")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let running = try RunningServer(["--data-dir", dir, "--port", "0", "--http-port", "0"])
        defer { _ = running.stop() }
        let token = try String(contentsOfFile: dir + "/admin.token", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let client = APIKeysClient(configuration: .init(port: running.port, adminToken: token, timeout: .seconds(5)))
        let created = try await client.createKey(name: "idle", permissions: ["jobs:read"])
        try await Task.sleep(for: .milliseconds(300))
        let tasks = "/proc/\(running.process.processIdentifier)/task"
        /// Voluntary context switches (sleeps ended) of each thread, by thread id and name.
        func wakeups() throws -> [String: (name: String, count: Int)] {
            var found: [String: (name: String, count: Int)] = [:]
            for task in try FileManager.default.contentsOfDirectory(atPath: tasks) {
                guard let status = try? String(contentsOfFile: "\(tasks)/\(task)/status", encoding: .utf8),
                    let line = status.split(separator: "\n").first(where: { $0.hasPrefix("voluntary_ctxt_switches") }),
                    let count = line.split(separator: "\t").last.flatMap({
                        Int($0.trimmingCharacters(in: .whitespaces))
                    })
                else { continue }
                let name = (try? String(contentsOfFile: "\(tasks)/\(task)/comm", encoding: .utf8)) ?? "?"
                found[task] = (name.trimmingCharacters(in: .whitespacesAndNewlines), count)
            }
            return found
        }
        let before = try wakeups()
        try await Task.sleep(for: .seconds(2))
        let after = try wakeups()
        let woke = after.compactMap { task, now -> String? in
            let delta = now.count - (before[task]?.count ?? 0)
            return delta > 0 ? "\(now.name): \(delta)" : nil
        }
        let total = after.reduce(0) { $0 + $1.value.count - (before[$1.key]?.count ?? 0) }
        // Before, the writer alone woke 400 times in 2 s. Alone this test sees a handful; once, in
        // a full parallel run, 22 (the writer and a libdispatch worker, 11 each; the cause is not
        // found), hence a bound ten times below the old rate rather than at what a quiet run sees.
        #expect(total < 40, "wakeups in 2 s of idling: \(woke.sorted())")
        // Woken by its first event, the writer stores it without waiting for its next look at the
        // disk, up to a second away (a writer left asleep would pass all three rounds about one
        // run in 16).
        for round in 1...3 {
            if round > 1 { try await Task.sleep(for: .milliseconds(1_200)) }
            let storedBefore = try await client.listAuditEvents(keyID: created.key.id, action: "api.request").events
                .count
            let answer = try await client.check(key: created.secret, permissions: ["jobs:read"])
            #expect(answer.decision == .allow)
            let asked = ContinuousClock.now
            var stored = false
            while !stored && ContinuousClock.now - asked < .milliseconds(400) {
                stored =
                    try await client.listAuditEvents(keyID: created.key.id, action: "api.request").events.count
                    > storedBefore
                if !stored { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(stored, "round \(round): the check after the idle spell was not written within 0.4 s")
        }
        await client.close()
    }

    /// Nonsense settings are refused before anything starts, naming the option.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: apikeyd.path)))
    func nonsenseSettingsAreRefused() async throws {
        let dir = try makeTemporaryDirectory("apikeyd-exe")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (arguments, says) in [
            (["--audit-retention", "soon"], "--audit-retention"), (["--frame-timeout", "0"], "positive"),
            (["--max-key-lifetime", "0d"], "--max-key-lifetime"),
            (["--max-key-lifetime", "forever"], "--max-key-lifetime"),
            (["--shutdown-timeout", "0"], "positive"), (["--tls-cert", "/x.pem"], "--tls-key"),
            (["--tls-cert", "/nope/x.pem", "--tls-key", "/nope/x.key"], "/nope/x.pem"),
            (["--http-port", "0", "--routes", "/nope/routes"], "--routes /nope/routes: no such file"),
            (["--permissions-file", "/nope/catalog"], "--permissions-file /nope/catalog: no such file"),
        ] {
            let run = try await runCommand(Self.apikeyd, ["--data-dir", dir, "--port", "0"] + arguments)
            #expect(run.status != 0 && run.stderr.contains(says), "\(arguments): \(run.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/apikeys.sqlite"))
    }

    /// SIGHUP re-reads the TLS certificate: new connections get the renewed one, a connection
    /// opened before keeps working.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: apikeyd.path)))
    func sighupReloadsTheCertificateWithoutDroppingConnections() async throws {
        let dir = try makeTemporaryDirectory("apikeyd-exe-tls")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certificates = try TestCertificates.make(in: dir)
        let running = try RunningServer([
            "--data-dir", dir + "/data", "--port", "0", "--tls-cert", certificates.serverCertificate, "--tls-key",
            certificates.serverKey,
        ])
        let (server, serverPort) = (running.process, running.port)
        #expect(running.logText.contains("tls=on"))
        let token = try String(contentsOfFile: dir + "/data/admin.token", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let client = APIKeysClient(
            configuration: .init(port: serverPort, adminToken: token, tls: .init(caFile: certificates.caCertificate)))
        defer { Task { await client.close() } }
        let created = try await client.createKey(name: "before-reload", permissions: ["jobs:read"])
        let connectsBefore = client.connections[0].connectAttempts.load(ordering: .relaxed)
        #expect(
            try await servedSubject(port: serverPort, ca: certificates.caCertificate).contains("apikeyd test server"))

        try certificates.renewServerCertificate(subject: "renewed server")
        kill(server.processIdentifier, SIGHUP)
        var subject = ""
        for _ in 0..<50 where !subject.contains("renewed server") {
            try await Task.sleep(for: .milliseconds(100))
            subject = try await servedSubject(port: serverPort, ca: certificates.caCertificate)
        }
        #expect(subject.contains("renewed server"), "\(subject)")
        // The connection opened before the reload is still the client's, and still served: the
        // client (which would reconnect silently) did not have to open another.
        #expect(try await client.check(key: created.secret, permissions: ["jobs:read"]).decision == .allow)
        #expect(
            client.connections[0].connectAttempts.load(ordering: .relaxed) == connectsBefore,
            "the reload dropped the connection")
        #expect(server.isRunning)
    }

    /// The subject of the certificate the server at `port` presents to a new connection.
    private func servedSubject(port: Int, ca: String) async throws -> String {
        let run = try await runCommand(
            URL(fileURLWithPath: "/usr/bin/openssl"),
            ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", ca, "-verify_return_error"], stdin: "")
        return run.stdout.split(separator: "\n").first { $0.hasPrefix("subject=") }.map(String.init) ?? run.stderr
    }

    /// `--log-format json`: every line of the log is a JSON object, and at the most talkative
    /// level no line holds a secret or an admin token, whatever the calls did.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: apikeyd.path)))
    func jsonLogsHoldNoSecret() async throws {
        let dir = try makeTemporaryDirectory("apikeyd-exe-log")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let running = try RunningServer([
            "--data-dir", dir, "--port", "0", "--log-format", "json", "--log-level", "trace",
        ])
        let serverPort = running.port
        let token = try String(contentsOfFile: dir + "/admin.token", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let client = APIKeysClient(configuration: .init(port: serverPort, adminToken: token))
        let created = try await client.createKey(name: "logged", permissions: ["jobs:read"])
        _ = try await client.check(key: created.secret, permissions: ["jobs:read", "vault:read"])
        let rotated = try await client.rotateKey(id: created.key.id)
        let wrongToken = "adm_" + String(token.dropFirst(4).reversed())
        let intruder = APIKeysClient(configuration: .init(port: serverPort, adminToken: wrongToken))
        await #expect(throws: APIKeysClientError.self) { _ = try await intruder.listKeys() }
        await intruder.close()
        await client.close()
        let logText = running.stop()

        let lines = logText.split(separator: "\n")
        #expect(lines.count > 5)
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["message"] is String && object?["level"] is String && object?["time"] is String, "\(line)")
        }
        for secret in [token, wrongToken, created.secret, rotated.secret] {
            #expect(!logText.contains(secret))
            // Nor the part of it that identifies it (the hint shows only the first 8 characters).
            #expect(!logText.contains(secret.dropFirst(8).prefix(16)))
        }
        #expect(logText.contains("admin call"))
    }
}
