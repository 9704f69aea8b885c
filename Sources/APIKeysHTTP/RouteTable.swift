import APIKeysCore

/// Which permissions a request needs, by method and path: the `--routes FILE` of forward-auth.
///
/// One route a line: a method (or `*` for any), a path pattern, and the permissions it needs
/// (separated by spaces or commas; `-` for none: a valid key is enough). In a pattern `*` is one
/// path segment and a final `**` any rest. The first route that matches wins; `#` starts a
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
        let segments: [Substring]
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
                    method: fields[0] == "*" ? nil : fields[0].uppercased(), segments: segments,
                    permissions: permissions))
        }
        self.routes = routes
    }

    /// The permissions `method` on `path` needs, or nil when no route matches. A query string
    /// is not part of the path.
    /// Each route is matched by walking the path's segments in place: no array per request.
    public func permissions(method: String, path: String) -> [String]? {
        let path = RequestPath.withoutQuery(path)
        let method =
            method.utf8.contains(where: { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") })
            ? method.uppercased() : method
        return routes.first { route in
            (route.method == nil || route.method == method) && Self.matches(route.segments, path)
        }?.permissions
    }

    private static func segments(of path: Substring) -> [Substring] {
        path.split(separator: "/", omittingEmptySubsequences: true)
    }

    /// Whether the non-empty segments of `path` (split at its `/` bytes, as an upstream splits
    /// it) match `pattern`: segment by segment, `*` any one segment, a final `**` any number of
    /// further segments (none included).
    static func matches(_ pattern: [Substring], _ path: Substring) -> Bool {
        let anyTail = pattern.last == "**"
        let fixed = anyTail ? pattern.count - 1 : pattern.count
        let bytes = path.utf8
        let slash = UInt8(ascii: "/")
        var matched = 0
        var index = bytes.startIndex
        while true {
            while index < bytes.endIndex && bytes[index] == slash { index = bytes.index(after: index) }
            guard index < bytes.endIndex else { break }
            let start = index
            while index < bytes.endIndex && bytes[index] != slash { index = bytes.index(after: index) }
            if matched == fixed { return anyTail }
            guard pattern[matched] == "*" || pattern[matched] == path[start..<index] else { return false }
            matched += 1
        }
        return matched == fixed
    }
}

/// A line of a route table that cannot be used.
public struct RouteTableError: Error, Hashable, Sendable, CustomStringConvertible {
    public let line: Int
    public let reason: String
    public var description: String { "routes line \(line): \(reason)" }
}
