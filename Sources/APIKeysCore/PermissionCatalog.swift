/// The permissions a key can be granted. A name not in the catalog can never be granted.
/// There is no wildcard, no inheritance and no super-admin: a key holds exactly what it was given.
public struct PermissionCatalog: Sendable, Hashable {
    /// A permission and the one line that says what it allows.
    public struct Entry: Sendable, Hashable {
        public let name: String
        public let description: String

        public init(name: String, description: String) {
            self.name = name
            self.description = description
        }
    }

    /// In the order they are listed.
    public let entries: [Entry]
    /// Each name's bit in a ``PermissionMask``: its position in ``entries``.
    private let bits: [String: UInt64]

    /// Most permissions a catalog can hold: a key's grants are one 64-bit mask.
    public static let maxEntries = 64

    /// A catalog of `entries`. Throws ``KeyError/invalidCatalog(_:)`` for an empty catalog, more
    /// than 64 entries, a duplicate, or a name not of the form `[a-z0-9_.-]+(:[a-z0-9_.-]+)*`.
    public init(_ entries: [Entry]) throws(KeyError) {
        guard !entries.isEmpty else { throw .invalidCatalog("the catalog has no permission") }
        guard entries.count <= Self.maxEntries else {
            throw .invalidCatalog(
                "the catalog has \(entries.count) permissions; at most \(Self.maxEntries) are supported")
        }
        var seen = Set<String>()
        for entry in entries {
            guard Self.isWellFormed(entry.name) else {
                throw .invalidCatalog("permission name \"\(entry.name)\" is not of the form area:action")
            }
            guard seen.insert(entry.name).inserted else {
                throw .invalidCatalog("permission \"\(entry.name)\" is listed twice")
            }
        }
        self.entries = entries
        self.bits = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, UInt64(1) << $0) })
    }

    /// Whether `name` is in the catalog.
    public func contains(_ name: String) -> Bool { bits[name] != nil }

    /// The mask of `names`; names not in the catalog add nothing (they can never be granted).
    public func mask(of names: some Sequence<String>) -> PermissionMask { requirement(of: names).mask }

    /// What asking for `names` takes, worked out once: a check asking the same again is then
    /// judged by one mask test (``Requirement/isMet(by:)``), without a lookup per name.
    func requirement(of names: some Sequence<String>) -> Requirement {
        var mask: UInt64 = 0
        var allKnown = true
        for name in names {
            if let bit = bits[name] { mask |= bit } else { allKnown = false }
        }
        return Requirement(mask: PermissionMask(rawValue: mask), allKnown: allKnown)
    }

    /// The permissions a check asks for, as a mask of this catalog.
    struct Requirement: Sendable, Hashable {
        /// The catalog's bits of the names asked for.
        let mask: PermissionMask
        /// False when a name is not in the catalog: it can never be granted.
        let allKnown: Bool

        /// Whether a key holding `granted` has every permission asked for.
        @inline(__always)
        func isMet(by granted: PermissionMask) -> Bool {
            allKnown && granted.rawValue & mask.rawValue == mask.rawValue
        }
    }

    /// Whether `mask` grants `name`; never for a name the catalog lacks.
    public func grants(_ mask: PermissionMask, _ name: String) -> Bool {
        guard let bit = bits[name] else { return false }
        return mask.rawValue & bit != 0
    }

    /// `names` deduplicated and in catalog order. Throws ``KeyError/noPermissions`` for an empty
    /// list and ``KeyError/unknownPermission(_:)`` for the first name the catalog lacks.
    public func validate(_ requested: [String]) throws(KeyError) -> [String] {
        guard !requested.isEmpty else { throw .noPermissions }
        for name in requested where bits[name] == nil { throw .unknownPermission(name) }
        let wanted = Set(requested)
        return entries.map(\.name).filter { wanted.contains($0) }
    }

    private static func isWellFormed(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64
            && name.split(separator: ":", omittingEmptySubsequences: false).allSatisfy { part in
                !part.isEmpty
                    && part.unicodeScalars.allSatisfy {
                        ("a"..."z").contains($0) || ("0"..."9").contains($0) || "_.-".unicodeScalars.contains($0)
                    }
            }
    }

    /// A catalog from text: one permission per line, its name, white space, then its description;
    /// blank lines and lines starting with `#` are skipped. For `apikeyd --permissions-file`.
    ///
    /// ```
    /// # area:action   what it allows
    /// reports:read    Read reports
    /// reports:write   Create and delete reports
    /// ```
    public init(parsing text: String) throws(KeyError) {
        var entries: [Entry] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = String(line).trimmingWhitespace()
            guard !trimmed.isEmpty, !trimmed.hasPrefix("#") else { continue }
            let name = trimmed.prefix { !$0.isWhitespace }
            let description = String(trimmed.dropFirst(name.count)).trimmingWhitespace()
            guard !description.isEmpty else {
                throw .invalidCatalog("line \(number + 1): \"\(name)\" has no description")
            }
            entries.append(Entry(name: String(name), description: description))
        }
        try self.init(entries)
    }

    /// The ten permissions of the contract.
    public static let standard = try! PermissionCatalog([
        Entry(name: "jobs:read", description: "List and view backup jobs"),
        Entry(name: "jobs:write", description: "Create, edit, delete jobs"),
        Entry(name: "jobs:execute", description: "Trigger backup jobs"),
        Entry(name: "history:read", description: "View execution history and poll status"),
        Entry(name: "sources:read", description: "List database sources"),
        Entry(name: "destinations:read", description: "List storage destinations"),
        Entry(name: "storage:read", description: "Browse stored backups"),
        Entry(name: "storage:write", description: "Delete stored backups"),
        Entry(name: "notifications:read", description: "List notification channels"),
        Entry(name: "vault:read", description: "List encryption profiles"),
    ])
}

/// A set of permissions of one catalog, one bit per entry: what the check index keeps per key.
public struct PermissionMask: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
}
