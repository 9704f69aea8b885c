import APIKeysCore
import APIKeysStore
import ArgumentParser
import Foundation

/// `apikeyd admin-token …`: manage admin tokens directly in the local database.
struct AdminTokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin-token",
        abstract:
            "Create, list and revoke admin tokens in the local database or the PostgreSQL database (works while servers run).",
        subcommands: [Create.self, Revoke.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an admin token and print it once.")
        @OptionGroup var dataDirectory: StoreOptions
        @Argument(help: "A name for the token, recorded as the actor of what it does.")
        var name: String
        @Option(help: "read (reads only), keys (read plus changing keys) or admin (everything, admin tokens too).")
        var scope: String = "admin"
        @Option(help: "keys: the only permissions its keys may hold, comma-separated (e.g. jobs:execute,history:read).")
        var ceiling: String?
        @Option(help: "keys: keys it creates or extends must expire within this (e.g. 30d, 12h).")
        var maxKeyLifetime: String?
        @Option(help: "The token stops working after this long (e.g. 90d); default: never.")
        var expires: String?

        func run() async throws {
            let grant = try AdminGrant(
                scopeNamed: scope, ceiling: ceiling, maxKeyLifetime: maxKeyLifetime, expiresIn: expires,
                nowMS: Int64(Date().timeIntervalSince1970 * 1000))
            let token = try await dataDirectory.withStore {
                try await $0.createAdminToken(name: name, grant: grant, actor: AdminActor(name: localActor))
            }
            print(token)
            printErr("admin token \"\(name)\" created; copy it now, it will not be shown again")
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an admin token by name.")
        @OptionGroup var dataDirectory: StoreOptions
        @Argument(help: "The token's name.")
        var name: String

        func run() async throws {
            guard
                try await dataDirectory.withStore({
                    try await $0.revokeAdminToken(name: name, actor: AdminActor(name: localActor))
                })
            else {
                throw ValidationError("no admin token named \"\(name)\"")
            }
            print("revoked admin token \"\(name)\"")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the admin tokens: name, then scope, ceiling, key lifetime and expiry where set.")
        @OptionGroup var dataDirectory: StoreOptions

        func run() async throws {
            for token in try await dataDirectory.withStore({ try await $0.adminTokens() }) {
                print(([token.name] + token.grant.summary).joined(separator: "\t"))
            }
        }
    }
}

/// The actor recorded for admin-token changes made with this command: the local user running it.
var localActor: String {
    let user = getpwuid(geteuid()).flatMap { $0.pointee.pw_name.map { String(cString: $0) } } ?? "uid \(geteuid())"
    return "apikeyd admin-token (\(user))"
}

/// Prints a line on standard error.
func printErr(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
