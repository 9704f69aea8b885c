import APIKeysServer
import APIKeysJSON
import ArgumentParser

/// `apikeyd backup --to FILE`: a consistent copy of the SQLite store, taken while it serves.
struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy the SQLite store to a new file while the server serves (PostgreSQL: use pg_dump).",
        discussion: """
            The copy is one consistent snapshot (SQLite's online backup API), checked before it gets its \
            name: SQLite's integrity check, the audit trail's hash chain verified, the keys counted. The \
            file is either absent or a whole, checked copy, even if this command is killed. It never \
            overwrites a file.
            """)

    @OptionGroup var store: StoreOptions
    @Option(help: "The file to write (must not exist).")
    var to: String

    func run() async throws {
        let summary = try await APIKeysServer.backup(store.configuration, to: to)
        print("backup \(to): the store as of \(takenAt(summary)), \(describe(summary))")
    }
}

/// `apikeyd restore --from FILE`: put a backup in place as the data directory's store.
struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Put a backup in place as the data directory's SQLite store (no server may be running on it).",
        discussion: """
            The backup is copied beside the store, checked as `apikeyd backup` checks it, migrated to this \
            version's schema and only then put in place. Refused while a server holds the data directory. \
            A restore brings the keys back as they were when the copy was taken: a key disabled, rotated \
            or deleted after that is alive again. Revoke them again (their key.* events are in the audit \
            export of the old store, or in your own copies of it) before serving.
            """)

    @OptionGroup var store: StoreOptions
    @Option(help: "The backup file to restore.")
    var from: String
    @Flag(help: "Restore over an existing store (it is kept beside it as apikeys.sqlite.replaced-TIME).")
    var replace = false

    func run() async throws {
        let summary = try await APIKeysServer.restore(store.configuration, from: from, replace: replace)
        print("restored \(from) into \(store.configuration.databasePath): \(describe(summary))")
        print("the store is as of \(takenAt(summary)), when the copy was taken:")
        print("keys disabled, rotated or deleted since then are alive again; revoke them again before serving")
    }
}

private func describe(_ summary: BackupSummary) -> String {
    "\(summary.keys) keys, audit chain verified (\(summary.links) links, \(summary.events) events, head link \(summary.chainHead.position))"
}

/// The copy's time in RFC 3339, as every other tool of the project writes times.
private func takenAt(_ summary: BackupSummary) -> String {
    JSONTime.rfc3339(summary.takenAtMS) ?? "an unknown time (not made by apikeyd backup)"
}
