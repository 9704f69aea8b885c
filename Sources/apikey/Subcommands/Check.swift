import APIKeysClient
import APIKeysJSON
import ArgumentParser
import Foundation

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask whether a key is valid and holds permissions. Exit status 0 allowed, 1 denied.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The API key, or - to read it from standard input (keeps it out of the process list).")
    var key: String

    @Option(
        name: [.customLong("permission"), .customShort("p")], help: "A permission the key must hold; repeat for more.")
    var permissions: [String] = []

    @Option(help: "What the request is about to do, recorded in the audit trail (e.g. \"POST /api/jobs/42/run\").")
    var resource: String = ""

    func run() async throws {
        let secret = key == "-" ? (readLine() ?? "").trimmingCharacters(in: .whitespaces) : key
        let answer = try await connection.withClient(needsToken: false) { client in
            try await client.check(key: secret, permissions: permissions, resource: resource)
        }
        if output.json {
            print(Output.json(CheckJSON(answer)))
            if answer.decision != .allow { throw ExitCode(1) }
            return
        }
        if answer.decision == .allow {
            print(Output.printable("ALLOW \(answer.httpStatus) key \(answer.keyID) (\(answer.keyName))"))
            return
        }
        var line = "DENY \(answer.httpStatus) \(answer.reason.name)"
        if !answer.keyID.isEmpty { line += " key \(answer.keyID) (\(answer.keyName))" }
        if !answer.missingPermissions.isEmpty {
            line += " missing: \(answer.missingPermissions.joined(separator: " "))"
        }
        print(Output.printable(line))
        throw ExitCode(1)
    }
}
