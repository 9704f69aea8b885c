import APIKeysStore
internal import CSQLite

/// A prepared statement, owned and cached by its ``SQLiteConnection``.
final class SQLiteStatement {
    private var raw: OpaquePointer?
    private unowned let connection: SQLiteConnection
    let sql: String

    init(_ raw: OpaquePointer, connection: SQLiteConnection, sql: String) {
        self.raw = raw
        self.connection = connection
        self.sql = sql
    }

    func finalize() {
        sqlite3_finalize(raw)
        raw = nil
    }

    func reset() {
        sqlite3_reset(raw)
        sqlite3_clear_bindings(raw)
    }

    /// Binds `values` to parameters 1, 2, … in order.
    @discardableResult
    func bind(_ values: SQLiteValue...) throws(StoreError) -> SQLiteStatement {
        try bind(values)
    }

    /// Binds `values` to parameters 1, 2, … in order.
    @discardableResult
    func bind(_ values: [SQLiteValue]) throws(StoreError) -> SQLiteStatement {
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            let rc: Int32
            switch value {
            case .null: rc = sqlite3_bind_null(raw, index)
            case .integer(let number): rc = sqlite3_bind_int64(raw, index, number)
            case .text(var text):
                // withUTF8 hands over the string's own bytes; passing a String as a C string would
                // first copy it into a temporary array.
                rc = text.withUTF8 {
                    sqlite3_bind_text(raw, index, $0.baseAddress, Int32($0.count), csqlite_transient())
                }
            case .blob(let bytes):
                rc = bytes.withUnsafeBytes {
                    sqlite3_bind_blob(raw, index, $0.baseAddress, Int32($0.count), csqlite_transient())
                }
            }
            guard rc == SQLITE_OK else { throw connection.error(rc, sql: sql) }
        }
        return self
    }

    /// Advances to the next row: true if there is one, false when done.
    func step() throws(StoreError) -> Bool {
        let rc = sqlite3_step(raw)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw connection.error(rc, sql: sql)
        }
    }

    /// Runs a statement that returns no rows.
    func run() throws(StoreError) {
        while try step() {}
    }

    /// Calls `row` for each result row and collects what it returns.
    func rows<T>(_ row: (SQLiteStatement) throws -> T) throws -> [T] {
        defer { sqlite3_reset(raw) }
        var result: [T] = []
        while try step() { result.append(try row(self)) }
        return result
    }

    /// Calls `row` for each result row until it returns false.
    func scan(_ row: (SQLiteStatement) throws -> Bool) throws {
        defer { sqlite3_reset(raw) }
        while try step(), try row(self) {}
    }

    /// The first row read by `row`, or nil if there is none. Resets the statement, so that it
    /// does not hold a read transaction open (which would pin an old snapshot of the WAL).
    func firstRow<T>(_ row: (SQLiteStatement) throws -> T) throws -> T? {
        defer { sqlite3_reset(raw) }
        return try step() ? try row(self) : nil
    }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(raw, column) }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(raw, column) == SQLITE_NULL }

    func optionalInt64(_ column: Int32) -> Int64? {
        isNull(column) ? nil : sqlite3_column_int64(raw, column)
    }

    func text(_ column: Int32) -> String {
        guard let text = sqlite3_column_text(raw, column) else { return "" }
        let count = Int(sqlite3_column_bytes(raw, column))
        return String(decoding: UnsafeBufferPointer(start: text, count: count), as: UTF8.self)
    }

    /// Calls `body` with the bytes of a blob column, valid only during the call (no copy).
    func withBlob<R, E: Error>(_ column: Int32, _ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let count = Int(sqlite3_column_bytes(raw, column))
        return try body(UnsafeRawBufferPointer(start: count > 0 ? sqlite3_column_blob(raw, column) : nil, count: count))
    }

    func blob(_ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(raw, column))
        guard count > 0, let bytes = sqlite3_column_blob(raw, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: bytes, count: count))
    }
}

/// A value bound to a statement parameter.
enum SQLiteValue {
    case null
    case integer(Int64)
    case text(String)
    case blob([UInt8])

    static func optional(_ value: Int64?) -> SQLiteValue { value.map(SQLiteValue.integer) ?? .null }
}
