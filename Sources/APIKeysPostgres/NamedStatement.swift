import APIKeysStore
import PostgresNIO

/// SQL whose parameters are named, `{name}`, instead of numbered: each distinct name becomes
/// `$n` in the order it first appears, and values are bound by name (``NamedValues``), so the
/// order of the bindings cannot drift from the text. Binding fails unless every name in the text
/// has exactly one value and every value a name.
struct NamedStatement: Sendable {
    /// The SQL PostgreSQL receives, with `$1`, `$2`…
    let sql: String
    /// `names[n - 1]` is `$n`.
    let names: [String]

    init(_ template: String) {
        var sql = ""
        var names: [String] = []
        var numbers: [Substring: Int] = [:]
        var rest = template[...]
        while let open = rest.firstIndex(of: "{") {
            let afterOpen = rest.index(after: open)
            let name = rest[afterOpen...].prefix { $0.isLetter || $0.isNumber || $0 == "_" }
            let close = name.endIndex
            // Only `{identifier}` is a parameter: `'{}'` (an empty array literal) is left as it is.
            guard !name.isEmpty, close < rest.endIndex, rest[close] == "}", name.first?.isLetter == true else {
                sql += rest[...open]
                rest = rest[afterOpen...]
                continue
            }
            sql += rest[..<open]
            let number: Int
            if let known = numbers[name] {
                number = known
            } else {
                names.append(String(name))
                number = names.count
                numbers[name] = number
            }
            sql += "$\(number)"
            rest = rest[rest.index(after: close)...]
        }
        sql += rest
        self.sql = sql
        self.names = names
    }

    /// The values of `values` in `$n` order.
    func bindings(_ values: NamedValues) throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: names.count)
        for name in names {
            guard let bind = values.binders[name] else {
                throw StoreError.database(server: "", message: "no value bound to the parameter {\(name)}")
            }
            bind(&bindings)
        }
        guard values.binders.count == names.count else {
            let unused = Set(values.binders.keys).subtracting(names).sorted()
            throw StoreError.database(server: "", message: "values bound to no parameter: \(unused)")
        }
        return bindings
    }

    /// A query of this statement with `values`.
    func query(_ values: NamedValues) throws -> PostgresQuery {
        PostgresQuery(unsafeSQL: sql, binds: try bindings(values))
    }
}

/// Values for a ``NamedStatement``, by parameter name.
struct NamedValues {
    fileprivate var binders: [String: (inout PostgresBindings) -> Void] = [:]

    init() {}

    /// Binds `value` to `{name}`; binding a name twice is a programming error.
    mutating func set(_ name: String, _ value: some PostgresDynamicTypeEncodable & Sendable) {
        precondition(binders[name] == nil, "the parameter {\(name)} is bound twice")
        binders[name] = { $0.append(value) }
    }
}

/// A WHERE clause made of the filters given, each with its value: only the conditions of a query's
/// filters reach the statement, so that PostgreSQL plans for those.
struct NamedConditions {
    private(set) var clauses: [String] = []
    private(set) var values = NamedValues()

    /// Adds `clause`, which names the parameter `{name}`, bound to `value`; nothing when nil.
    mutating func add(_ clause: String, _ name: String, _ value: (some PostgresDynamicTypeEncodable & Sendable)?) {
        guard let value else { return }
        clauses.append(clause)
        values.set(name, value)
    }

    /// Binds `value` to `{name}` outside the conditions (a LIMIT).
    mutating func set(_ name: String, _ value: some PostgresDynamicTypeEncodable & Sendable) {
        values.set(name, value)
    }

    var sql: String { clauses.joined(separator: " AND ") }
}
