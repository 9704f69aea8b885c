import APIKeysCore
import APIKeysClient
import APIKeysJSON
import ArgumentParser
import Foundation

/// The arguments of the subcommands that act on one key by id.
struct KeyIDArguments: ParsableArguments {
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The key's id (key_…), as `apikey list` shows it.")
    var id: String
}

struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one key.")
    @OptionGroup var key: KeyIDArguments

    func run() async throws {
        let found = try await key.connection.withClient { try await $0.getKey(id: key.id) }
        print(key.output.json ? Output.json(KeyJSON(found)) : Output.details(found))
    }
}

extension KeyIDArguments {
    /// Enables or disables the key and says so.
    func setEnabled(_ enabled: Bool) async throws {
        let changed = try await connection.withClient { try await $0.setKeyEnabled(id: id, enabled: enabled) }
        if output.json { return print(Output.json(KeyJSON(changed))) }
        print(Output.printable("\(enabled ? "Enabled" : "Disabled") key \(changed.id) (\(changed.name))"))
    }
}

struct Enable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Enable a key.")
    @OptionGroup var key: KeyIDArguments

    func run() async throws { try await key.setEnabled(true) }
}

struct Disable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Disable a key: checks with it are refused (401) until it is enabled.")
    @OptionGroup var key: KeyIDArguments

    func run() async throws { try await key.setEnabled(false) }
}

struct Rotate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Give a key a new secret; the old secret stops working at once, or after --grace.")
    @OptionGroup var key: KeyIDArguments
    @Option(
        help: ArgumentHelp(
            "Keep the old secret valid this much longer (45s, 30m, 12h, 7d; at most 7d), for its users to switch.",
            valueName: "duration"))
    var grace: String?

    func validate() throws {
        if let grace, DurationText.seconds(grace) == nil {
            throw ValidationError("--grace \(grace): not a duration like 30m, 12h or 7d")
        }
    }

    func run() async throws {
        let graceSeconds = grace.flatMap(DurationText.seconds) ?? 0
        let rotated = try await key.connection.withClient {
            try await $0.rotateKey(id: key.id, grace: .seconds(graceSeconds))
        }
        if key.output.json {
            return print(Output.json(IssuedKeyJSON(key: KeyJSON(rotated.key), secret: rotated.secret)))
        }
        let graceEnd = rotated.key.graceEndsAtMS
        print(
            Output.printable("Rotated key \(rotated.key.id) (\(rotated.key.name)); ")
                + (graceEnd > 0
                    ? "the old secret still works until \(Output.time(graceEnd))." : "the old secret no longer works."))
        print("")
        print(Output.secret(rotated.secret))
    }
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a key for good (its audit events stay).")
    @OptionGroup var key: KeyIDArguments
    @Flag(help: "Do not ask for confirmation.") var yes = false

    func run() async throws {
        try await key.connection.withClient { client in
            if !yes {
                let found = try await client.getKey(id: key.id)
                let question = "Delete key \(found.id) (\(found.name))? This cannot be undone. [y/N] "
                // With --json, stdout is for the JSON alone.
                if key.output.json {
                    FileHandle.standardError.write(Data(question.utf8))
                } else {
                    print(question, terminator: "")
                }
                guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
                    throw CLIError("not deleted (answer y to confirm, or pass --yes)")
                }
            }
            try await client.deleteKey(id: key.id)
        }
        if key.output.json { return print(Output.json(["deleted": key.id])) }
        print(Output.printable("Deleted key \(key.id)"))
    }
}

struct Update: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rename a key, change its expiry, replace its permissions, its allowed networks or its rate limit.")
    @OptionGroup var key: KeyIDArguments

    @Option(help: "A new name.")
    var name: String?

    @Option(help: "A new expiry (90d, 2027-01-31, …), or `never` to clear it.")
    var expires: String?

    @Option(
        name: [.customLong("permission"), .customShort("p")],
        help: "The new permission set (replaces the old one); repeat for more.")
    var permissions: [String] = []

    @Option(
        name: .customLong("allow"),
        help: "The new allowlist (replaces the old one): a network in CIDR notation or an address; repeat for more.")
    var allowedNetworks: [String] = []

    @Flag(help: "Clear the allowlist: checks from any address.")
    var allowAny = false

    @Option(help: "A new rate limit (100/s, 6000/m…), or `none` to remove it.") var rate: String?
    @Option(help: RateArgument.burstHelp) var burst: UInt32?
    @Option(help: "Refill the usage credits: this many checks left from now, or `unlimited`.") var uses: String?

    func run() async throws {
        let expiresAtMS = try expires.map { try TimeArgument.milliseconds($0) }
        guard allowedNetworks.isEmpty || !allowAny else {
            throw ValidationError("--allow and --allow-any exclude each other")
        }
        let networks = !allowedNetworks.isEmpty || allowAny ? allowedNetworks : nil
        let rateLimit = try RateArgument.limit(rate: rate, burst: burst, clearing: true)
        let remainingUses = try uses.map { uses in
            guard let count = uses == "unlimited" ? -1 : Int64(uses), count >= -1 else {
                throw ValidationError("--uses \(uses): not a number of checks or `unlimited`")
            }
            return count
        }
        let newPermissions = permissions.isEmpty ? nil : permissions
        guard
            name != nil || expiresAtMS != nil || newPermissions != nil || networks != nil || rateLimit != nil
                || remainingUses != nil
        else {
            throw ValidationError(
                "nothing to change: give --name, --expires, --permission, --allow, --allow-any, --rate or --uses")
        }
        let updated = try await key.connection.withClient { [name] client in
            try await client.updateKey(
                id: key.id, name: name, permissions: newPermissions, expiresAtMS: expiresAtMS,
                allowedNetworks: networks, rateLimit: rateLimit, remainingUses: remainingUses)
        }
        print(key.output.json ? Output.json(KeyJSON(updated)) : Output.details(updated))
    }
}
