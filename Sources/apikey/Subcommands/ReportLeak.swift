import APIKeysClient
import ArgumentParser
import Foundation

struct ReportLeak: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report-leak",
        abstract: "Report a secret found where it should not be: its key is disabled at once. Needs no admin token.",
        discussion: """
            The answer is the same whether or not the secret was a key, so the command prints the \
            same line either way.
            """)
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The secret as found, or - to read it from standard input (keeps it out of the process list).")
    var key: String

    @Option(help: "Where it was found (a URL, a file), recorded with the report.")
    var source: String = ""

    func run() async throws {
        let secret = key == "-" ? (readLine() ?? "").trimmingCharacters(in: .whitespaces) : key
        try await connection.withClient(needsToken: false) { client in
            try await client.reportLeakedKey(secret, source: source)
        }
        print(output.json ? #"{"reported":true}"# : "reported; if it was a key, that key is now disabled")
    }
}
