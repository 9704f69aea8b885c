import APIKeysStore
import Logging
import PostgresNIO

/// Which database history a replica's index follows: the cluster, the database in it, and the
/// primary's timeline.
///
/// A standby promoted after a failover keeps the cluster and the database but starts a new
/// timeline, and may lack the last changes the old primary committed (asynchronous replication).
/// A database restored from a dump is another database (another oid). A replica compares what
/// it recorded with what the database says at every catch-up (``ChangeFeed``).
struct DatabaseHistory: Equatable, Sendable, CustomStringConvertible {
    /// `pg_control_system().system_identifier`: shared by a primary and the standbys made from it.
    var system: Int64
    /// The database's oid: a database dropped and restored under the same name has another.
    var database: Int64
    /// The timeline the primary writes on, advanced by every promotion and point-in-time
    /// recovery; 0 when unknown (the server is in recovery: a standby).
    var timeline: Int64

    /// The columns `system`, `database` and `timeline`, for a SELECT list.
    static let columnsSQL = """
        (SELECT system_identifier FROM pg_control_system()) AS system,
        (SELECT oid::bigint FROM pg_database WHERE datname = current_database()) AS database,
        CASE WHEN pg_is_in_recovery() THEN 0::bigint
             ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END AS timeline
        """

    init(system: Int64, database: Int64, timeline: Int64) {
        self.system = system
        self.database = database
        self.timeline = timeline
    }

    init(_ cells: PostgresRandomAccessRow) throws {
        system = try cells["system"].decode(Int64.self)
        database = try cells["database"].decode(Int64.self)
        timeline = try cells["timeline"].decode(Int64.self)
    }

    /// The same cluster and database (the timeline may differ).
    func isSameDatabase(as other: DatabaseHistory) -> Bool { system == other.system && database == other.database }

    var description: String { "cluster \(system), database oid \(database), timeline \(timeline)" }
}

/// Change versions (`key_changes.version`): the timeline they were written on in the high bits
/// (``timelineShift``), a sequence in the low ones (PostgreSQL's migration 11). Every change
/// written after a promotion is numbered above every change of the old timeline, those the
/// failover lost included, so a replica never takes a new change for one it has applied.
enum ChangeVersion {
    static let timelineShift: Int64 = 48

    static func timeline(of version: Int64) -> Int64 { version >> timelineShift }

    /// How many changes lie after `applied` up to `announced`, as far as the numbers tell: on
    /// another timeline, the count of the later one's.
    static func distance(from applied: Int64, to announced: Int64) -> Int64 {
        guard announced > applied else { return 0 }
        guard timeline(of: announced) == timeline(of: applied) else {
            return announced & ((1 << timelineShift) - 1)
        }
        return announced - applied
    }
}

/// SQL that tells a replica whether the database still holds the history it follows.
enum HistoryRows {
    /// The columns of ``DatabaseHistory/columnsSQL`` and `missing`: which of the parameter
    /// `{versions}` the change log lacks, pruned ones apart (a version at or below the change
    /// log's horizon may be gone without loss). Also the head of every catch-up's first query
    /// (``ChangeRows/ChangesSince``), so that the check costs no round trip of its own.
    /// Each version is looked up by itself, as the first version at or after it (a correlated
    /// subquery in order with a limit, which no plan answers but through the primary key): a
    /// generic plan made while the log was short keeps being used as it grows, and as
    /// `NOT EXISTS` (or `=`) that plan hashed or scanned the whole log at every catch-up, which
    /// made CreateKey a fifth slower and revocations reach other replicas later.
    static let probeColumnsSQL = """
        \(DatabaseHistory.columnsSQL),
        (SELECT coalesce(array_agg(v ORDER BY v), '{}')
         FROM unnest({versions}::bigint[]) v
         WHERE v > (SELECT version FROM change_log_horizon)
           AND (SELECT k.version FROM key_changes k WHERE k.version >= v ORDER BY k.version LIMIT 1)
               IS DISTINCT FROM v)::bigint[] AS missing
        """

    /// The database's history and which of `versions` it lacks (``probeColumnsSQL``).
    struct Probe: PostgresPreparedStatement {
        static let statement = NamedStatement("SELECT \(probeColumnsSQL)")
        static let sql = statement.sql
        typealias Row = (history: DatabaseHistory, missing: [Int64])
        var versions: [Int64]

        func makeBindings() throws -> PostgresBindings {
            var values = NamedValues()
            values.set("versions", versions)
            return try Self.statement.bindings(values)
        }

        func decodeRow(_ row: PostgresRow) throws -> Row {
            let cells = row.makeRandomAccess()
            return (try DatabaseHistory(cells), try cells["missing"].decode([Int64].self))
        }
    }

    /// The history of the database `client` reaches, and which of `versions` it lacks.
    static func probe(_ versions: [Int64], on client: PostgresClient) async throws
        -> (history: DatabaseHistory, missing: [Int64])
    {
        for try await row in try await client.execute(Probe(versions: versions)) { return row }
        throw StoreError.database(server: "", message: "the history probe returned no row")
    }
}
