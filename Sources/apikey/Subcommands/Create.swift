import APIKeysClient
import APIKeysJSON
import ArgumentParser

struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a key and print its secret once.")

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "A name for the key (1-100 characters).")
    var name: String

    @Option(
        name: [.customLong("permission"), .customShort("p")],
        help: "A permission to grant; repeat for more (see `apikey permissions`).")
    var permissions: [String] = []

    @Option(help: "When the key expires: a duration (90d, 12h), a date (2027-01-31) or a date-time; default never.")
    var expires: String?

    @Option(
        name: .customLong("allow"),
        help:
            "A network the key's checks must come from (CIDR such as 10.0.0.0/8 or 2001:db8::/32, or an address); repeat for more; default any."
    )
    var allowedNetworks: [String] = []

    @Option(help: RateArgument.rateHelp) var rate: String?
    @Option(help: RateArgument.burstHelp) var burst: UInt32?
    @Option(help: "Usage credits: how many checks the key may be allowed in all; default unlimited.")
    var uses: Int64?

    func run() async throws {
        let expiresAtMS = try expires.map { try TimeArgument.milliseconds($0) } ?? 0
        let rateLimit = try RateArgument.limit(rate: rate, burst: burst)
        let created = try await connection.withClient { client in
            try await client.createKey(
                name: name, permissions: permissions, expiresAtMS: expiresAtMS, allowedNetworks: allowedNetworks,
                rateLimit: rateLimit, remainingUses: uses)
        }
        if output.json {
            print(Output.json(IssuedKeyJSON(key: KeyJSON(created.key), secret: created.secret)))
            return
        }
        print(Output.printable("Created key \(created.key.id) (\(created.key.name))"))
        print(Output.details(created.key))
        print("")
        print(Output.secret(created.secret))
    }
}
