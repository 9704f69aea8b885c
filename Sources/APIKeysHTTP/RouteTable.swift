import APIKeysCore

/// Which permissions a request needs, by method and path: the `--routes FILE` of forward-auth.
///
/// One route a line: a method (or `*` for any), a path pattern, and the permissions it needs
/// (separated by spaces or commas; `-` for none: a valid key is enough). In a pattern `*` is one
/// path segment and a final `**` any rest; other segments match byte for byte. The first route that matches wins; `#` starts a
/// comment. A request no route matches is denied (403).
///
/// ```
/// POST /api/jobs/*/run   jobs:execute
/// GET  /api/jobs/**      jobs:read
/// *    /api/history/**   history:read
/// ```
public struct RouteTable: Sendable, Hashable {
    struct Route: Sendable, Hashable {
        let method: String?
        let pattern: PathPattern
        let permissions: [String]
    }

    let routes: [Route]

    /// Parses `text`; every permission must be in `catalog`. Throws ``RouteTableError`` naming
    /// the line.
    public init(parsing text: String, catalog: PermissionCatalog) throws {
        var routes: [Route] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = content.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "," })
            guard !fields.isEmpty else { continue }
            let number = index + 1
            guard fields.count >= 3 else {
                throw RouteTableError(line: number, reason: "expected METHOD PATH PERMISSION..., got \"\(content)\"")
            }
            guard fields[1].hasPrefix("/") else {
                throw RouteTableError(line: number, reason: "the path \"\(fields[1])\" does not start with /")
            }
            let segments = Self.segments(of: fields[1])
            if let wild = segments.firstIndex(of: "**"), wild != segments.count - 1 {
                throw RouteTableError(line: number, reason: "** may only end a path")
            }
            let names = fields[2...].map(String.init)
            var permissions: [String] = []
            if names != ["-"] {
                for name in names where catalog.entries.first(where: { $0.name == name }) == nil {
                    throw RouteTableError(line: number, reason: "\"\(name)\" is not in the permission catalog")
                }
                permissions = names
            }
            routes.append(
                Route(
                    method: fields[0] == "*" ? nil : fields[0].uppercased(), pattern: PathPattern(segments),
                    permissions: permissions))
        }
        self.routes = routes
    }

    /// The permissions `method` on `path` needs, or nil when no route matches. A query string
    /// is not part of the path.
    public func permissions(method: String, path: String) -> [String]? {
        let path = RequestPath.withoutQuery(path)
        let method =
            method.utf8.contains(where: { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") })
            ? method.uppercased() : method
        for index in routes.indices
        where (routes[index].method == nil || routes[index].method == method) && routes[index].pattern.matches(path) {
            return routes[index].permissions
        }
        return nil
    }

    private static func segments(of path: Substring) -> [Substring] {
        path.split(separator: "/", omittingEmptySubsequences: true)
    }
}

/// A route's path pattern, ready to match a path in place: the bytes of its literal segments in
/// one array, so that matching, done for every forward-auth request, takes no reference and makes
/// no `Substring`.
struct PathPattern: Sendable, Hashable {
    /// The segments before a final `**`: where each literal one lies in `literals`, nil for `*`.
    private let segments: [Range<Int>?]
    private let literals: [UInt8]
    /// Whether the pattern ends with `**`.
    private let anyTail: Bool

    init(_ pattern: [Substring]) {
        anyTail = pattern.last == "**"
        var literals: [UInt8] = []
        segments = pattern.dropLast(anyTail ? 1 : 0).map { segment in
            guard segment != "*" else { return nil }
            let start = literals.count
            literals += segment.utf8
            return start..<literals.count
        }
        self.literals = literals
    }

    /// Whether the non-empty segments of `path` (split at its `/` bytes, as an upstream splits
    /// it) match: segment by segment and byte for byte (as the upstream compares them), `*` any
    /// one segment, a final `**` any number of further segments (none included).
    func matches(_ path: Substring) -> Bool {
        if let result = path.utf8.withContiguousStorageIfAvailable({ matches($0) }) { return result }
        return Array(path.utf8).withUnsafeBufferPointer { matches($0) }
    }

    private func matches(_ path: UnsafeBufferPointer<UInt8>) -> Bool {
        literals.withUnsafeBufferPointer { literals in
            let slash = UInt8(ascii: "/")
            var matched = 0
            var index = 0
            while true {
                while index < path.count && path[index] == slash { index += 1 }
                guard index < path.count else { break }
                let start = index
                while index < path.count && path[index] != slash { index += 1 }
                if matched == segments.count { return anyTail }
                if let literal = segments[matched] {
                    guard literal.count == index - start,
                        literal.indices.allSatisfy({ literals[$0] == path[start + $0 - literal.lowerBound] })
                    else { return false }
                }
                matched += 1
            }
            return matched == segments.count
        }
    }
}

/// A line of a route table that cannot be used.
public struct RouteTableError: Error, Hashable, Sendable, CustomStringConvertible {
    public let line: Int
    public let reason: String
    public var description: String { "routes line \(line): \(reason)" }
}
