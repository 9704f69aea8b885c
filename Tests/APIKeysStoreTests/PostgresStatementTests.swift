@testable import APIKeysPostgres
import Foundation
import PostgresNIO
import Testing

/// PostgreSQL statements bind their parameters by name (``NamedStatement``): each placeholder of
/// every statement the store sends has exactly one value, and every value a placeholder.
@Suite struct PostgresStatementTests {
    /// The highest `$n` in `sql`.
    private func highestPlaceholder(_ sql: String) -> Int {
        let regex = try! NSRegularExpression(pattern: #"\$([0-9]+)"#)
        let range = NSRange(sql.startIndex..., in: sql)
        return regex.matches(in: sql, range: range).compactMap { match in
            Range(match.range(at: 1), in: sql).flatMap { Int(sql[$0]) }
        }.max() ?? 0
    }

    @Test func namesBecomeNumbersInTheOrderTheyFirstAppear() throws {
        let statement = NamedStatement("SELECT {b}, {a}, {b}, '{}'::int[], '{1}' FROM t WHERE x = {a_2}")
        #expect(statement.sql == "SELECT $1, $2, $1, '{}'::int[], '{1}' FROM t WHERE x = $3")
        #expect(statement.names == ["b", "a", "a_2"])
        var values = NamedValues()
        values.set("a", Int64(1))
        values.set("b", "text")
        #expect(throws: (any Error).self, "a placeholder without a value") { try statement.bindings(values) }
        values.set("a_2", true)
        #expect(try statement.bindings(values).count == 3)
        values.set("c", Int64(3))
        #expect(throws: (any Error).self, "a value without a placeholder") { try statement.bindings(values) }
    }

    private func batch(deleting deleted: [String]) -> BatchRows.Batch {
        BatchRows.Batch(tokens: [], inserted: [], updated: [], deleted: deleted, events: [], changes: [])
    }

    @Test func theGroupCommitStatementsBindEveryPlaceholderOnce() throws {
        let creations = BatchRows.Creations.statement
        let creationBinds = try creations.bindings(batch(deleting: []).values())
        #expect(creationBinds.count == creations.names.count)
        #expect(highestPlaceholder(creations.sql) == creationBinds.count)
        #expect(BatchRows.Creations.sql == creations.sql)

        let any = BatchRows.anyBatch
        let anyBinds = try any.bindings(batch(deleting: ["key"]).values())
        #expect(anyBinds.count == any.names.count)
        #expect(highestPlaceholder(any.sql) == anyBinds.count)
        #expect(anyBinds.count > creationBinds.count, "updates and deletions add their own parameters")
        #expect(
            !any.sql.replacingOccurrences(of: "'{}'", with: "").contains("{"),
            "no name is left unreplaced (the empty array literal aside)")
    }

    @Test func theAuditAndChangeLogStatementsBindEveryPlaceholderOnce() throws {
        let insert = try AuditRows.InsertEvents(events: [], links: []).makeBindings()
        #expect(insert.count == AuditRows.InsertEvents.statement.names.count)
        #expect(highestPlaceholder(AuditRows.InsertEvents.sql) == insert.count)
        let changes = try ChangeRows.ChangesSince(after: 0, limit: 10, versions: [1]).makeBindings()
        #expect(changes.count == 3)
        #expect(highestPlaceholder(ChangeRows.ChangesSince.sql) == 3)
    }
}
