import Synchronization

/// The in-memory map from secret hash to key state that answers every check without storage.
///
/// The store loads it at start and updates it after each committed mutation, before the
/// mutation returns, so a rotated, disabled or deleted key is refused from that moment on.
public final class KeyIndex: Sendable {
    private struct State {
        var byHash: [SecretHash: KeyCheckState] = [:]
        var hashByID: [String: SecretHash] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Number of keys.
    public var count: Int { state.withLock { $0.byHash.count } }

    /// Adds the key, or replaces its state and secret hash.
    public func upsert(_ key: KeyCheckState, hash: SecretHash) {
        state.withLock { state in
            if let old = state.hashByID[key.id], old != hash { state.byHash[old] = nil }
            state.byHash[hash] = key
            state.hashByID[key.id] = hash
        }
    }

    /// Replaces a known key's state, keeping its hash; does nothing for an unknown id.
    public func update(_ key: KeyCheckState) {
        state.withLock { state in
            guard let hash = state.hashByID[key.id] else { return }
            state.byHash[hash] = key
        }
    }

    /// Forgets the key with `id`.
    public func remove(id: String) {
        state.withLock { state in
            guard let hash = state.hashByID.removeValue(forKey: id) else { return }
            state.byHash[hash] = nil
        }
    }

    /// The key whose secret hashes to `hash`.
    public func lookup(_ hash: SecretHash) -> KeyCheckState? {
        state.withLock { $0.byHash[hash] }
    }

    /// Decides a check of `secret` for `permissions` at `nowMS` (PROTOCOL.md §4). A leading
    /// `Bearer ` is ignored.
    public func check(secret: String, permissions: [String], format: SecretFormat, nowMS: Int64) -> CheckOutcome {
        var secret = secret
        return secret.withUTF8 { utf8 in
            var bytes = UnsafeRawBufferPointer(utf8)
            if bytes.starts(with: Self.bearer) { bytes = UnsafeRawBufferPointer(rebasing: bytes[Self.bearer.count...]) }
            guard format.isWellFormed(bytes: bytes) else { return CheckOutcome(denial: .malformedKey, key: nil) }
            guard let key = lookup(SecretHash(ofBytes: bytes)) else { return CheckOutcome(denial: .unknownKey, key: nil) }
            return Self.judge(key, permissions: permissions, nowMS: nowMS)
        }
    }

    /// The decision for a known key.
    static func judge(_ key: KeyCheckState, permissions: [String], nowMS: Int64) -> CheckOutcome {
        guard key.enabled else { return CheckOutcome(denial: .disabled, key: key) }
        if let expiry = key.expiresAtMS, expiry <= nowMS { return CheckOutcome(denial: .expired, key: key) }
        var missing: [String] = []
        for permission in permissions where !key.permissions.contains(permission) && !missing.contains(permission) {
            missing.append(permission)
        }
        return missing.isEmpty
            ? CheckOutcome(denial: nil, key: key)
            : CheckOutcome(denial: .missingPermission, key: key, missingPermissions: missing)
    }

    private static let bearer = Array("Bearer ".utf8)
}
