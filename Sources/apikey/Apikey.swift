import ArgumentParser

/// `apikey`: the admin CLI of apikeyd, over RPC.
@main
struct Apikey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apikey",
        abstract: "Manage and check apikeyd API keys.",
        discussion: """
            Connects to the server given by --server (env APIKEY_SERVER, default 127.0.0.1:7411) with the admin \
            token from --token (env APIKEY_ADMIN_TOKEN) or from --token-file (env APIKEY_TOKEN_FILE, default \
            ./data/admin.token, the file a local server writes on first start).
            Exit status: 0 success (check: allowed), 1 check denied, 2 error.
            """,
        subcommands: [
            Create.self, List.self, Show.self, Update.self, Enable.self, Disable.self, Rotate.self, Delete.self,
            Permissions.self, Audit.self, Check.self, ReportLeak.self, Report.self, AdminTokens.self, WhoAmI.self,
        ])
}
