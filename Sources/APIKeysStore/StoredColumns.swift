import APIKeysCore

/// How both stores write a key's list and policy columns as text: one form, so that a database
/// moved between them, and the code of each, agree.
package enum StoredColumns {
    /// Permissions as stored: names joined by spaces (a name never holds one).
    package static func encodePermissions(_ names: [String]) -> String { names.joined(separator: " ") }

    /// An admin token's grant as its columns: `scope`, `ceiling` (NULL: none), `max_key_lifetime_ms`
    /// and `expires_at_ms` (NULL: none).
    package static func encodeGrant(_ grant: AdminGrant) -> (
        scope: String, ceiling: String?, maxKeyLifetimeMS: Int64?, expiresAtMS: Int64?
    ) {
        (
            grant.scope.rawValue, grant.ceiling.map { encodePermissions($0.sorted()) }, grant.maxKeyLifetimeMS,
            grant.expiresAtMS
        )
    }

    /// The grant of an admin token's columns; a scope this version does not know grants only
    /// reading, never more.
    package static func decodeGrant(scope: String, ceiling: String?, maxKeyLifetimeMS: Int64?, expiresAtMS: Int64?)
        -> AdminGrant
    {
        AdminGrant(
            scope: AdminGrant.Scope(rawValue: scope) ?? .read, ceiling: ceiling.map { Set(decodePermissions($0)) },
            maxKeyLifetimeMS: maxKeyLifetimeMS, expiresAtMS: expiresAtMS)
    }

    package static func decodePermissions(_ text: String) -> [String] {
        text.split(separator: " ").map(String.init)
    }

    /// A key's allowlist as stored (the same form as permissions: normalised networks never hold a space).
    package static func encodeNetworks(_ networks: [String]) -> String { networks.joined(separator: " ") }

    package static func decodeNetworks(_ text: String) -> [String] { decodePermissions(text) }

    /// A rate limit as stored (both stores): ``KeyRateLimit/stored``, `''` for none.
    package static func encodeRateLimit(_ limit: KeyRateLimit?) -> String { limit?.stored ?? "" }

    package static func decodeRateLimit(_ text: String) -> KeyRateLimit? {
        text.isEmpty ? nil : KeyRateLimit(stored: text)
    }

    /// The check form of a stored allowlist.
    package static func networks(of stored: String) -> [IPNetwork] {
        stored.isEmpty ? [] : decodeNetworks(stored).compactMap(IPNetwork.init)
    }

    /// The masks of stored permission texts, each computed once: keys share few distinct sets,
    /// which makes loading a million keys a dictionary lookup per key.
    package struct MaskCache {
        private let catalog: PermissionCatalog
        private var masks: [String: PermissionMask] = [:]

        package init(catalog: PermissionCatalog) { self.catalog = catalog }

        package mutating func mask(of stored: String) -> PermissionMask {
            if let mask = masks[stored] { return mask }
            let mask = catalog.mask(of: StoredColumns.decodePermissions(stored))
            masks[stored] = mask
            return mask
        }
    }
}
