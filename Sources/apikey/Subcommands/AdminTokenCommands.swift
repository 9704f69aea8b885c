import APIKeysClient
import APIKeysJSON
import APIKeysCore
import ArgumentParser

/// `apikey admin-token create|list|revoke`: admin tokens over RPC (the calling token needs scope admin).
struct AdminTokens: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin-token",
        abstract: "Create, list and revoke admin tokens (needs an admin token of scope admin).",
        subcommands: [CreateToken.self, ListTokens.self, RevokeToken.self])

    struct CreateToken: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Create an admin token and print its secret once.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "A name for the token, recorded as the actor of what it does.")
        var name: String
        @Option(help: "read (reads only), keys (read plus changing keys) or admin (everything, admin tokens too).")
        var scope: String
        @Option(help: "keys: the only permissions its keys may hold, comma-separated (e.g. jobs:execute,history:read).")
        var ceiling: String?
        @Option(help: "keys: keys it creates or extends must expire within this (e.g. 30d, 12h).")
        var maxKeyLifetime: String?
        @Option(help: "When the token stops working: a duration (90d), a date or a date-time; default never.")
        var expires: String?

        func run() async throws {
            guard let scope = AdminScope(name: scope) else {
                throw CLIError("--scope: one of read, keys, admin")
            }
            let lifetime = try maxKeyLifetime.map { text -> Duration in
                guard let seconds = DurationText.seconds(text), seconds > 0 else {
                    throw CLIError("--max-key-lifetime: a duration such as 30d or 12h")
                }
                return .seconds(seconds)
            }
            let expiresAtMS = try expires.map { try TimeArgument.milliseconds($0) } ?? 0
            let ceiling = ceiling?.split(separator: ",").map { String($0.filter { !$0.isWhitespace }) } ?? []
            let created = try await connection.withClient { client in
                try await client.createAdminToken(
                    name: name, scope: scope, ceiling: ceiling, maxKeyLifetime: lifetime,
                    expiresAtMS: expiresAtMS)
            }
            if output.json {
                return print(Output.json(IssuedAdminTokenJSON(token: .init(created.token), secret: created.secret)))
            }
            print(Output.tokenDetails(created.token))
            print()
            print(Output.secret(created.secret))
        }
    }

    struct ListTokens: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List the admin tokens.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let tokens = try await connection.withClient { try await $0.listAdminTokens() }
            if output.json { return print(Output.json(tokens.map(AdminTokenJSON.init))) }
            print(
                Output.table(
                    ["NAME", "SCOPE", "CEILING", "MAX KEY LIFETIME", "CREATED", "EXPIRES", "LAST USED"],
                    tokens.map(Output.tokenRow)))
        }
    }

    struct RevokeToken: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "revoke", abstract: "Revoke an admin token by name; it stops working at once.")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "The token's name.")
        var name: String

        func run() async throws {
            try await connection.withClient { try await $0.revokeAdminToken(name: name) }
            print("revoked admin token \"\(Output.printable(name))\"")
        }
    }
}

/// `apikey whoami`: the calling admin token as the server sees it.
struct WhoAmI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "whoami", abstract: "Show the admin token in use: its name, scope, ceiling and expiry.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let token = try await connection.withClient { try await $0.whoAmI() }
        if output.json { return print(Output.json(AdminTokenJSON(token))) }
        print(Output.tokenDetails(token))
    }
}

extension Output {
    static func tokenRow(_ token: AdminToken) -> [String] {
        [
            token.name, token.scope.name, token.ceiling.isEmpty ? "any" : token.ceiling.joined(separator: ","),
            token.maxKeyLifetimeMS == 0 ? "—" : "\(token.maxKeyLifetimeMS / 1000)s", time(token.createdAtMS),
            time(token.expiresAtMS), time(token.lastUsedAtMS),
        ]
    }

    /// An admin token as `field: value` lines.
    static func tokenDetails(_ token: AdminToken) -> String {
        let row = tokenRow(token)
        return table(
            ["FIELD", "VALUE"],
            zip(["name", "scope", "ceiling", "max key lifetime", "created", "expires", "last used"], row).map {
                [$0, $1]
            }
        ).split(separator: "\n").dropFirst().joined(separator: "\n")
    }
}
