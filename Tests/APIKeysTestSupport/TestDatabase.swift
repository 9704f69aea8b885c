import Foundation

/// The PostgreSQL cluster a test run started (`Tests/postgres/with-cluster.sh`), when it did.
public enum TestDatabase {
    /// `postgres://user@host:port/database` of the cluster's database, or nil.
    public static var url: String? { ProcessInfo.processInfo.environment["APIKEYS_TEST_DATABASE_URL"] }

    /// Creates a new, empty database on the cluster and returns its URL.
    public static func createDatabase() async throws -> String {
        guard let url, let parts = URLComponents(string: url), let host = parts.host, let port = parts.port,
            let user = parts.user
        else { throw TestDatabaseError(message: "APIKEYS_TEST_DATABASE_URL is not set") }
        let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(20)
        let bin = ProcessInfo.processInfo.environment["APIKEYS_TEST_PG_BIN"] ?? "/usr/bin"
        let result = try await runCommand(
            URL(fileURLWithPath: bin + "/createdb"), ["-h", host, "-p", "\(port)", "-U", user, String(name)])
        guard result.status == 0 else { throw TestDatabaseError(message: "createdb failed: \(result.stderr)") }
        return "postgres://\(user)@\(host):\(port)/\(name)"
    }

    /// Runs `sql` on the database at `url` with psql; returns its output (unaligned, tuples only).
    @discardableResult
    public static func psql(_ url: String, _ sql: String) async throws -> String {
        let bin = ProcessInfo.processInfo.environment["APIKEYS_TEST_PG_BIN"] ?? "/usr/bin"
        let result = try await runCommand(
            URL(fileURLWithPath: bin + "/psql"), ["-X", "-q", "-A", "-t", "-d", url, "-c", sql])
        guard result.status == 0 else { throw TestDatabaseError(message: "psql failed: \(result.stderr)") }
        return result.stdout
    }

    struct TestDatabaseError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }
}

/// A PostgreSQL cluster of a test's own (Tests/postgres/cluster.sh), for tests that stop and start
/// the database, which the shared cluster of the run cannot do.
public final class PrivateCluster: Sendable {
    public let directory: String
    /// `postgres://…/apikeyd_test` of the cluster.
    public let url: String
    private static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../postgres/cluster.sh").standardizedFileURL

    private init(directory: String, url: String) {
        self.directory = directory
        self.url = url
    }

    /// initdb and start; throws when PostgreSQL cannot be started.
    public static func start() async throws -> PrivateCluster {
        // Not under a directory of mode 0700: the cluster's owner (`postgres`, under root) must reach it.
        let directory = NSTemporaryDirectory() + "apikeyd-pg-" + UUID().uuidString
        let output = try await run("init", directory)  // its last line is the URL
        let url = output.split(separator: "\n").last.map(String.init) ?? ""
        return PrivateCluster(directory: directory, url: url)
    }

    /// The cluster's port on 127.0.0.1.
    public var port: Int { URLComponents(string: url)?.port ?? 0 }

    /// A streaming standby of `primary` (pg_basebackup -R), started; asynchronous unless the
    /// primary names it in ``setSynchronousStandbys(_:)``.
    public static func standby(of primary: PrivateCluster) async throws -> PrivateCluster {
        let directory = NSTemporaryDirectory() + "apikeyd-pg-" + UUID().uuidString
        let output = try await run("standby", directory, primary.directory)
        return PrivateCluster(directory: directory, url: output.split(separator: "\n").last.map(String.init) ?? "")
    }

    /// Promotes this standby to primary (a new timeline), waiting until it is.
    public func promote() async throws { try await Self.run("promote", directory) }
    /// Stops the server as a crash would: no shutdown checkpoint, connections cut.
    public func crash() async throws { try await Self.run("crash", directory) }
    /// Sets `synchronous_standby_names` (`*`: any standby; empty: none) and reloads.
    public func setSynchronousStandbys(_ names: String) async throws {
        try await Self.run("sync", directory, names)
    }

    /// Stops the server (fast: its connections are cut).
    public func stop() async throws { try await Self.run("stop", directory) }
    /// Starts it again on the same port.
    public func start() async throws { try await Self.run("start", directory) }
    /// Stops it and removes its files.
    public func remove() async { _ = try? await Self.run("remove", directory) }

    /// Runs `body` with a cluster of its own, removed afterwards whether `body` returns or throws
    /// (a test that fails halfway must not leave a PostgreSQL server running).
    public static func with<T>(_ body: (PrivateCluster) async throws -> T) async throws -> T {
        let cluster = try await start()
        do {
            let result = try await body(cluster)
            await cluster.remove()
            return result
        } catch {
            await cluster.remove()
            throw error
        }
    }

    /// Runs cluster.sh on a GCD thread with posix_spawn and waitpid, its output in a file:
    /// Foundation's `Process` was seen never to notice the script's exit once it had started
    /// the PostgreSQL daemon (the script stayed a zombie, `waitUntilExit` never returned).
    @discardableResult
    private static func run(_ command: String, _ directory: String, _ more: String...) async throws -> String {
        let (status, output) = try await offThePool { spawn(script.path, [command, directory] + more) }
        guard status == 0 else {
            throw TestDatabase.TestDatabaseError(message: "cluster.sh \(command) failed (\(status)): \(output)")
        }
        return output
    }

    private static func spawn(_ path: String, _ arguments: [String]) -> (Int32, String) {
        let outputPath = NSTemporaryDirectory() + "apikeyd-cluster-" + UUID().uuidString
        defer { unlink(outputPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, path, &actions, nil, argv, environ) == 0 else { return (-1, "cannot run \(path)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        return ((status & 0x7f) == 0 ? (status >> 8) & 0xff : -1, output)
    }
}
