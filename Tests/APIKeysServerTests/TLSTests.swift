import APIKeysClient
import APIKeysCore
import APIKeysServer
import APIKeysTestSupport
import Foundation
import Testing

/// TLS on the RPC port, with certificates made by the openssl CLI: the client library over TLS,
/// mutual TLS, Python's ssl module as a second client, bad files, and a handshake that never ends.
@Suite struct TLSTests {
    /// Runs `body` with a server on TLS (mutual when `mutual`) and the test certificates.
    private func withTLSServer(
        mutual: Bool = false, frameTimeoutSeconds: Int64 = 5,
        _ body: (TestServer, TestCertificates) async throws -> Void
    ) async throws {
        let dir = try makeTemporaryDirectory("apikeyd-tls")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certificates = try TestCertificates.make(in: dir)
        try await withServer(configure: {
            $0.tls = TLSFiles(
                certificate: certificates.serverCertificate, privateKey: certificates.serverKey,
                clientCA: mutual ? certificates.caCertificate : nil)
            $0.frameTimeoutSeconds = frameTimeoutSeconds
        }) { server, _ in
            try await body(server, certificates)
        }
    }

    private func client(
        _ server: TestServer, _ certificates: TestCertificates, tls: APIKeysClient.TLS?, host: String = "127.0.0.1"
    ) -> APIKeysClient {
        APIKeysClient(
            configuration: .init(
                host: host, port: server.port, adminToken: server.adminToken, timeout: .seconds(5), tls: tls))
    }

    @Test func aKeysWholeLifeOverTLS() async throws {
        try await withTLSServer { server, certificates in
            // By address (matched against the certificate's IP) and by name (SNI and DNS name).
            for host in ["127.0.0.1", "localhost"] {
                let client = client(server, certificates, tls: .init(caFile: certificates.caCertificate), host: host)
                let created = try await client.createKey(name: "over-tls-\(host)", permissions: ["jobs:read"])
                #expect(try await client.check(key: created.secret, permissions: ["jobs:read"]).decision == .allow)
                let rotated = try await client.rotateKey(id: created.key.id)
                #expect(try await client.check(key: created.secret).reason == .unknownKey)
                #expect(try await client.check(key: rotated.secret).decision == .allow)
                _ = try await client.setKeyEnabled(id: created.key.id, enabled: false)
                #expect(try await client.check(key: rotated.secret).reason == .disabled)
                try await client.deleteKey(id: created.key.id)
                #expect(try await client.check(key: rotated.secret).reason == .unknownKey)
                await client.close()
            }
        }
    }

    @Test func whatIsNotTLSOrNotTrustedIsRefused() async throws {
        try await withTLSServer { server, certificates in
            // A plain client gets no answer from a TLS port; a client that does not trust the
            // server's CA (here: the system's roots) refuses the server.
            let cases: [(String, APIKeysClient.TLS?)] = [
                ("plain", nil), ("system roots", .init()),
                ("another CA", .init(caFile: certificates.directory + "/other-ca.pem")),
            ]
            for (label, tls) in cases {
                let client = client(server, certificates, tls: tls)
                await #expect { _ = try await client.listPermissions() } throws: { error in
                    let refused = error as? APIKeysClientError
                    // A TLS refusal ends the connection; an untrusting client refuses the server at
                    // connect (the handshake), usually naming the certificate.
                    let message = "\(refused?.message ?? "")".lowercased()
                    return refused?.code == .unavailable
                        && (label == "plain" || message.contains("certificate") || message.hasPrefix("cannot connect"))
                }
                await client.close()
            }
            // The same server answers a client that trusts its CA: the refusals above are the
            // server's TLS at work, not a server that is down.
            let trusting = client(server, certificates, tls: .init(caFile: certificates.caCertificate))
            let served = try await trusting.listPermissions()
            #expect(served.count == 10)
            await trusting.close()
            // Files that are not there are said so, before any connection.
            let missing = client(server, certificates, tls: .init(caFile: certificates.directory + "/nope.pem"))
            await #expect { _ = try await missing.listPermissions() } throws: {
                ($0 as? APIKeysClientError)?.code == .failedPrecondition
            }
            await missing.close()
        }
    }

    @Test func mutualTLSRefusesClientsWithoutACertificateOfTheCA() async throws {
        try await withTLSServer(mutual: true) { server, certificates in
            let ca = certificates.caCertificate
            let anonymous = client(server, certificates, tls: .init(caFile: ca))
            let stranger = client(
                server, certificates,
                tls: .init(
                    caFile: ca, certificateFile: certificates.strangerCertificate,
                    privateKeyFile: certificates.strangerKey))
            for refused in [anonymous, stranger] {
                await #expect { _ = try await refused.listPermissions() } throws: {
                    ($0 as? APIKeysClientError)?.code == .unavailable
                }
                await refused.close()
            }
            let member = client(
                server, certificates,
                tls: .init(
                    caFile: ca, certificateFile: certificates.clientCertificate, privateKeyFile: certificates.clientKey)
            )
            let created = try await member.createKey(name: "mtls", permissions: ["jobs:read"])
            #expect(try await member.check(key: created.secret, permissions: ["jobs:read"]).decision == .allow)
            await member.close()
        }
    }

    @Test(.enabled(if: interopPython != nil))
    func pythonsSSLModuleIsASecondClient() async throws {
        try await withTLSServer(mutual: true) { server, certificates in
            let work = try makeTemporaryDirectory("apikeys-py-tls")
            defer { try? FileManager.default.removeItem(atPath: work) }
            let run = try await runCommand(
                interopPython!,
                [
                    repositoryRoot.appendingPathComponent("Tests/interop/second_client.py").path,
                    repositoryRoot.appendingPathComponent("proto").path, work, String(server.port), server.adminToken,
                    certificates.caCertificate, certificates.clientCertificate, certificates.clientKey,
                ])
            #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
            #expect(run.stdout.contains("over TLS (TLSv1."), "\(run.stdout)")
        }
    }

    @Test func aHandshakeThatNeverEndsLosesItsConnection() async throws {
        try await withTLSServer(frameTimeoutSeconds: 1) { server, _ in
            // Held for the frame timeout (1 s), then closed: not closed at once, not kept.
            let silent = try RawConnection(port: server.port)
            #expect(!silent.isClosedByPeer(waitingMS: 300), "closed before the timeout")
            #expect(silent.isClosedByPeer(waitingMS: 4000), "kept past the timeout")
        }
    }

    @Test func unusableTLSFilesStopTheStartInOneLine() async throws {
        let dir = try makeTemporaryDirectory("apikeyd-tls-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certificates = try TestCertificates.make(in: dir)
        try "not a certificate\n".write(toFile: dir + "/garbage.pem", atomically: true, encoding: .utf8)
        let cases: [(TLSFiles, String)] = [
            (TLSFiles(certificate: dir + "/missing.pem", privateKey: certificates.serverKey), "missing.pem"),
            (TLSFiles(certificate: dir + "/garbage.pem", privateKey: certificates.serverKey), "garbage.pem"),
            (TLSFiles(certificate: certificates.serverCertificate, privateKey: dir + "/garbage.pem"), "garbage.pem"),
            (TLSFiles(certificate: certificates.serverCertificate, privateKey: certificates.clientKey), "do not make"),
            (
                TLSFiles(
                    certificate: certificates.serverCertificate, privateKey: certificates.serverKey,
                    clientCA: dir + "/missing-ca.pem"), "missing-ca.pem"
            ),
        ]
        for (files, mention) in cases {
            let data = try makeTemporaryDirectory("apikeyd-tls-data")
            defer { try? FileManager.default.removeItem(atPath: data) }
            await #expect {
                _ = try await TestServer.start(dataDirectory: data, clock: ManualWallClock(nowMS: 0)) { $0.tls = files }
            } throws: { error in
                guard let error = error as? ServerError, error.code == .tls else { return false }
                return "\(error)".contains(mention) && !"\(error)".contains("\n")
            }
        }
    }
}
