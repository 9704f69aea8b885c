import Foundation

/// The PostgreSQL cluster a test run started (`Tests/postgres/with-cluster.sh`), when it did.
public enum TestDatabase {
    /// `postgres://user@host:port/database` of the cluster's database, or nil.
    public static var url: String? { ProcessInfo.processInfo.environment["APIKEYS_TEST_DATABASE_URL"] }

    /// Creates a new, empty database on the cluster and returns its URL.
    public static func createDatabase() throws -> String {
        guard let url, let parts = URLComponents(string: url), let host = parts.host, let port = parts.port,
            let user = parts.user
        else { throw TestDatabaseError(message: "APIKEYS_TEST_DATABASE_URL is not set") }
        let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(20)
        let bin = ProcessInfo.processInfo.environment["APIKEYS_TEST_PG_BIN"] ?? "/usr/bin"
        let result = try runCommand(URL(fileURLWithPath: bin + "/createdb"), ["-h", host, "-p", "\(port)", "-U", user, String(name)])
        guard result.status == 0 else { throw TestDatabaseError(message: "createdb failed: \(result.stderr)") }
        return "postgres://\(user)@\(host):\(port)/\(name)"
    }

    /// Runs `sql` on the database at `url` with psql; returns its output (unaligned, tuples only).
    @discardableResult
    public static func psql(_ url: String, _ sql: String) throws -> String {
        let bin = ProcessInfo.processInfo.environment["APIKEYS_TEST_PG_BIN"] ?? "/usr/bin"
        let result = try runCommand(URL(fileURLWithPath: bin + "/psql"), ["-X", "-q", "-A", "-t", "-d", url, "-c", sql])
        guard result.status == 0 else { throw TestDatabaseError(message: "psql failed: \(result.stderr)") }
        return result.stdout
    }

    struct TestDatabaseError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }
}
