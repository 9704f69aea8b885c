import Synchronization

/// The in-memory map from secret hash to key state that answers every check without storage.
///
/// The store loads it at start and updates it after each mutation commits, before the mutation
/// returns, so a rotated, disabled or deleted key is refused from that moment on.
///
/// Kept small so that a million keys fit in well under 300 MB: a key's permissions are a bit
/// mask over the catalog, and the table is keyed by the first 128 bits of the SHA-256 (finding
/// another secret with the same 128-bit prefix is a 2^128 search; the database keeps all 256 bits).
public final class KeyIndex: Sendable {
    /// The catalog the masks refer to.
    public let catalog: PermissionCatalog
    private let byHash: Mutex<[Slot: KeyCheckState]>

    /// The first 128 bits of a secret hash.
    private struct Slot: Hashable {
        let high: UInt64
        let low: UInt64

        init(_ hash: SecretHash) { (high, low) = hash.prefix128 }

        func hash(into hasher: inout Hasher) { hasher.combine(high) }
    }

    public init(catalog: PermissionCatalog, expectedCount: Int = 0) {
        self.catalog = catalog
        self.byHash = Mutex(Dictionary(minimumCapacity: expectedCount))
    }

    /// Number of keys.
    public var count: Int { byHash.withLock { $0.count } }

    /// Adds or replaces the key whose secret hashes to `hash`; with `replacing`, that old hash
    /// (a rotated secret) is forgotten in the same step.
    public func upsert(_ key: KeyCheckState, hash: SecretHash, replacing old: SecretHash? = nil) {
        byHash.withLock { index in
            if let old, old != hash { index[Slot(old)] = nil }
            index[Slot(hash)] = key
        }
    }

    /// One change of ``apply(_:)``.
    public enum Edit: Sendable {
        /// ``upsert(_:hash:replacing:)``.
        case upsert(KeyCheckState, SecretHash, replacing: SecretHash?)
        /// ``remove(hash:)``.
        case remove(SecretHash)
    }

    /// Applies `edits` in order as one step: a check sees the index before all of them or after.
    public func apply(_ edits: [Edit]) {
        byHash.withLock { index in
            for edit in edits {
                switch edit {
                case .upsert(let key, let hash, let old):
                    if let old, old != hash { index[Slot(old)] = nil }
                    index[Slot(hash)] = key
                case .remove(let hash):
                    index[Slot(hash)] = nil
                }
            }
        }
    }

    /// Forgets the key whose secret hashes to `hash`.
    public func remove(hash: SecretHash) {
        byHash.withLock { _ = $0.removeValue(forKey: Slot(hash)) }
    }

    /// The key whose secret hashes to `hash`.
    public func lookup(_ hash: SecretHash) -> KeyCheckState? {
        byHash.withLock { $0[Slot(hash)] }
    }

    /// Decides a check of `secret` for `permissions` at `nowMS` (docs/PROTOCOL.md §6). A leading
    /// `Bearer ` is ignored.
    public func check(
        secret: String, permissions: [String], format: SecretFormat, nowMS: Int64, clientAddress: String = ""
    ) -> CheckOutcome {
        guard let hash = format.hash(ofPresented: secret) else { return CheckOutcome(denial: .malformedKey, key: nil) }
        guard let key = lookup(hash) else { return CheckOutcome(denial: .unknownKey, key: nil) }
        return judge(key, permissions: permissions, nowMS: nowMS, clientAddress: clientAddress)
    }

    /// The decision for a known key. A replaced secret past its grace is refused as unknown,
    /// exactly as one replaced without a grace.
    func judge(_ key: KeyCheckState, permissions: [String], nowMS: Int64, clientAddress: String) -> CheckOutcome {
        if let graceEnd = key.graceEndsAtMS, graceEnd <= nowMS { return CheckOutcome(denial: .unknownKey, key: nil) }
        guard key.enabled else { return CheckOutcome(denial: .disabled, key: key) }
        if let expiry = key.expiresAtMS, expiry <= nowMS { return CheckOutcome(denial: .expired, key: key) }
        var missing: [String] = []
        for permission in permissions
        where !catalog.grants(key.permissions, permission) && !missing.contains(permission) {
            missing.append(permission)
        }
        if !missing.isEmpty { return CheckOutcome(denial: .missingPermission, key: key, missingPermissions: missing) }
        guard key.admits(clientAddress: clientAddress) else { return CheckOutcome(denial: .ipNotAllowed, key: key) }
        return CheckOutcome(denial: nil, key: key)
    }
}
