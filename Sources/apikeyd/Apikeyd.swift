import ArgumentParser

/// `apikeyd`: the API-key authority server.
@main
struct Apikeyd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apikeyd",
        abstract: "The apikeyd server: API keys for scripts, CI pipelines and microservices.",
        subcommands: [Serve.self, AdminTokenCommand.self, Migrate.self, Backup.self, Restore.self],
        defaultSubcommand: Serve.self)
}
