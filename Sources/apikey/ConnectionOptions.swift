import APIKeysClient
import ArgumentParser
import Foundation

/// How to reach the server, shared by every subcommand.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "Server address host:port, or several replicas a:7411,b:7411,c:7411 (env APIKEY_SERVER).")
    var server: String = env("APIKEY_SERVER") ?? "127.0.0.1:7411"

    @Option(help: "Admin token (env APIKEY_ADMIN_TOKEN). Prefer --token-file: a flag shows in the process list.")
    var token: String?

    @Option(help: "File holding the admin token (env APIKEY_TOKEN_FILE).")
    var tokenFile: String = env("APIKEY_TOKEN_FILE") ?? "./data/admin.token"

    @Option(help: "Seconds to wait for a reply.")
    var timeout: Int = 10

    @Flag(help: "Speak TLS to the server (env APIKEY_TLS=1); implied by --ca and --client-cert.")
    var tls = env("APIKEY_TLS") == "1"

    @Option(help: "PEM file of the CA that signs the server's certificate; default: the system's (env APIKEY_CA).")
    var ca: String?

    @Option(help: "PEM client certificate, for a server that requires mutual TLS (env APIKEY_CLIENT_CERT).")
    var clientCert: String?

    @Option(help: "PEM private key of --client-cert (env APIKEY_CLIENT_KEY).")
    var clientKey: String?

    /// Runs `body` with a client, turning every failure into one line on stderr and exit status 2.
    func withClient<R>(needsToken: Bool = true, _ body: (APIKeysClient) async throws -> R) async throws -> R {
        let client: APIKeysClient
        do {
            client = try makeClient(needsToken: needsToken)
        } catch {
            fail("\(error)")
        }
        do {
            let result = try await body(client)
            await client.close()
            return result
        } catch let error as ExitCode {
            await client.close()
            throw error
        } catch {
            await client.close()
            fail("\(error)")
        }
    }

    private func makeClient(needsToken: Bool) throws -> APIKeysClient {
        guard let endpoints = APIKeysClient.Endpoint.list(server) else {
            throw CLIError("--server must be host:port (or a comma-separated list of them), not \"\(server)\"")
        }
        var adminToken = token ?? env("APIKEY_ADMIN_TOKEN")
        if adminToken == nil, needsToken {
            guard let text = try? String(contentsOfFile: tokenFile, encoding: .utf8) else {
                throw CLIError(
                    "no admin token: pass --token, set APIKEY_ADMIN_TOKEN, or point --token-file at a token file (\(tokenFile) is not readable)"
                )
            }
            adminToken = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let ca = ca ?? env("APIKEY_CA")
        let clientCert = clientCert ?? env("APIKEY_CLIENT_CERT")
        let clientKey = clientKey ?? env("APIKEY_CLIENT_KEY")
        guard (clientCert == nil) == (clientKey == nil) else {
            throw CLIError("--client-cert and --client-key go together")
        }
        let useTLS = tls || ca != nil || clientCert != nil
        var configuration = APIKeysClient.Configuration(
            adminToken: adminToken, timeout: .seconds(timeout),
            tls: useTLS ? .init(caFile: ca, certificateFile: clientCert, privateKeyFile: clientKey) : nil)
        configuration.endpoints = endpoints
        return APIKeysClient(configuration: configuration)
    }
}

/// A usage error of the CLI, said in one line.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Prints `message` as one line on stderr and exits with status 2.
func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("apikey: \(message)\n".utf8))
    exit(2)
}

func env(_ name: String) -> String? {
    ProcessInfo.processInfo.environment[name].flatMap { $0.isEmpty ? nil : $0 }
}
