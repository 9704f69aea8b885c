import APIKeysCore
import APIKeysServer
import APIKeysTestSupport
import Foundation
import Testing

/// What the server leaves for others to read: TLS 1.2 suites without forward secrecy, and data
/// files or a data directory that other users of the machine can read.
@Suite struct AtRestAndOnTheWireTests {
    /// `openssl s_client` with one TLS 1.2 cipher suite against a TLS port with an RSA key
    /// (static-RSA suites need one): true when the handshake succeeded.
    private func handshake(port: Int, cipher: String) async throws -> Bool {
        let run = try await runCommand(
            URL(fileURLWithPath: "/usr/bin/openssl"),
            ["s_client", "-connect", "127.0.0.1:\(port)", "-tls1_2", "-cipher", cipher], stdin: "")
        return run.status == 0 && run.stdout.contains("Cipher is \(cipher)")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl")))
    func tls12OffersOnlyForwardSecretSuites() async throws {
        try await withTemporaryDirectory { dir in
            let made = try await runCommand(
                URL(fileURLWithPath: "/usr/bin/openssl"),
                [
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem",
                ])
            #expect(made.status == 0, "\(made.stderr)")
            try await withServer(configure: {
                $0.tls = TLSFiles(certificate: dir + "/cert.pem", privateKey: dir + "/key.pem")
            }) { server, _ in
                #expect(try await handshake(port: server.port, cipher: "ECDHE-RSA-AES128-GCM-SHA256"))
                for cipher in ["AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA"] {
                    let accepted = try await handshake(port: server.port, cipher: cipher)
                    #expect(!accepted, "\(cipher) was accepted")
                }
            }
        }
    }

    /// A data directory made world-readable before the start, with a file in it: the start makes
    /// it 0700 and every file in it 0600, and the database files it creates are 0600.
    @Test func dataFilesAreTheOwnersOnly() async throws {
        try await withTemporaryDirectory { dir in
            chmod(dir, 0o755)
            let earlier = dir + "/notes.txt"
            FileManager.default.createFile(atPath: earlier, contents: Data("x".utf8))
            chmod(earlier, 0o644)
            let server = try await TestServer.start(dataDirectory: dir, clock: ManualWallClock(nowMS: 1_000_000))
            let client = server.client()
            _ = try await client.createKey(name: "k", permissions: ["jobs:read"])
            await client.close()
            func mode(_ path: String) -> mode_t {
                var info = stat()
                stat(path, &info)
                return info.st_mode & 0o777
            }
            #expect(mode(dir) == 0o700)
            #expect(mode(earlier) == 0o600)
            let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter {
                $0.hasPrefix("apikeys.sqlite")
            }
            #expect(files.contains("apikeys.sqlite-wal"), "\(files)")
            for file in files {
                #expect(mode(dir + "/" + file) == 0o600, "\(file): \(String(mode(dir + "/" + file), radix: 8))")
            }
            await server.server.shutdown()
        }
    }
}
