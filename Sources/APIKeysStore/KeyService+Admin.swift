import Foundation
import APIKeysCore

extension KeyService {
    /// A key with its raw secret: the result of create and rotate. The secret is not kept.
    public struct IssuedKey: Sendable, Hashable {
        public var key: KeyRecord
        public var secret: String
    }

    /// What a new key is given.
    public struct NewKey: Sendable, Hashable {
        public var name: String
        public var permissions: [String]
        /// 0 = never.
        public var expiresAtMS: Int64

        public init(name: String, permissions: [String], expiresAtMS: Int64 = 0) {
            self.name = name
            self.permissions = permissions
            self.expiresAtMS = expiresAtMS
        }
    }

    /// Creates a key. Throws ``KeyError`` for an invalid name, permission or expiry.
    public func createKey(
        name: String, permissions: [String], expiresAtMS: Int64 = 0, actor: String, deadline: Deadline = .never
    ) throws -> IssuedKey {
        try createKeys(
            [NewKey(name: name, permissions: permissions, expiresAtMS: expiresAtMS)], actor: actor, deadline: deadline)[0]
    }

    /// Creates keys in one transaction: all of them or, when one is invalid, none.
    public func createKeys(_ requests: [NewKey], actor: String, deadline: Deadline = .never) throws -> [IssuedKey] {
        let now = clock.nowMS()
        let issued = try requests.map { request in
            let name = try KeyRules.validName(request.name)
            let permissions = try catalog.validate(request.permissions)
            let expiry = try KeyRules.validExpiry(request.expiresAtMS, nowMS: now)
            let secret = format.generate()
            let key = KeyRecord(
                id: KeyRecord.newID(), name: name, hint: format.hint(for: secret), permissions: permissions,
                enabled: true, createdAtMS: now, updatedAtMS: now, expiresAtMS: expiry)
            return IssuedKey(key: key, secret: secret)
        }
        return try commit(deadline: deadline) { db in
            var changes: [IndexChange] = []
            for item in issued {
                let hash = SecretHash(of: item.secret)
                try KeyTable.insert(item.key, hash: hash, in: db)
                try recordAdminEvent(
                    .keyCreated, keyID: item.key.id, keyName: item.key.name, actor: actor,
                    detail: "created; expires \(Self.describe(item.key.expiresAtMS))",
                    permissions: item.key.permissions, at: now, in: db)
                changes.append(.put(item.key, hash, replacing: nil))
            }
            return (issued, changes)
        }
    }

    /// The key with `id`.
    public func getKey(id: String) throws -> KeyRecord {
        try withAdmin { try KeyTable.find(id: id, in: $0).key }
    }

    /// One page of keys, oldest first; `pageToken` is the previous page's `nextPageToken`.
    public func listKeys(pageSize: Int = 0, pageToken: String? = nil) throws -> (
        keys: [KeyRecord], nextPageToken: String?
    ) {
        let limit = Self.clampPageSize(pageSize)
        let after = try Self.cursor(from: pageToken) ?? 0
        let rows = try withAdmin { try KeyTable.page(afterPK: after, limit: limit + 1, in: $0) }
        let keys = rows.prefix(limit).map(\.key)
        return (keys, rows.count > limit ? String(rows[limit - 1].pk) : nil)
    }

    /// Changes the given fields; nil leaves a field as it is, an expiry of 0 clears it.
    /// Records `key.updated` for a name or expiry change and `key.permissions_changed` for a
    /// permission change (both when both change); a call that changes nothing records nothing.
    public func updateKey(
        id: String, name: String? = nil, expiresAtMS: Int64? = nil, permissions: [String]? = nil, actor: String,
        deadline: Deadline = .never
    ) throws -> KeyRecord {
        let now = clock.nowMS()
        let newName = try name.map { name throws(KeyError) in try KeyRules.validName(name) }
        let newExpiry = try expiresAtMS.map { expiry throws(KeyError) in try KeyRules.validExpiry(expiry, nowMS: now) }
        let newPermissions = try permissions.map { names throws(KeyError) in try catalog.validate(names) }
        return try mutate(actor: actor, at: now, deadline: deadline) { db in
            var (key, hash) = try KeyTable.find(id: id, in: db)
            var changes: [String] = []
            if let newName, newName != key.name {
                changes.append("name \"\(key.name)\" → \"\(newName)\"")
                key.name = newName
            }
            if let newExpiry, newExpiry != key.expiresAtMS {
                changes.append("expiry \(Self.describe(key.expiresAtMS)) → \(Self.describe(newExpiry))")
                key.expiresAtMS = newExpiry
            }
            var events: [(AuditAction, String, [String])] = []
            if !changes.isEmpty { events.append((.keyUpdated, changes.joined(separator: "; "), [])) }
            if let newPermissions, newPermissions != key.permissions {
                let detail =
                    "permissions [\(key.permissions.joined(separator: " "))] → [\(newPermissions.joined(separator: " "))]"
                events.append((.keyPermissionsChanged, detail, newPermissions))
                key.permissions = newPermissions
            }
            guard !events.isEmpty else { return (key, [], nil) }
            key.updatedAtMS = now
            try KeyTable.update(key, newHash: nil, in: db)
            return (key, events, .put(key, hash, replacing: nil))
        }
    }

    /// Enables or disables the key; a disabled key is refused from the moment this returns.
    public func setEnabled(id: String, enabled: Bool, actor: String, deadline: Deadline = .never) throws -> KeyRecord {
        let now = clock.nowMS()
        return try mutate(actor: actor, at: now, deadline: deadline) { db in
            var (key, hash) = try KeyTable.find(id: id, in: db)
            guard key.enabled != enabled else { return (key, [], nil) }
            key.enabled = enabled
            key.updatedAtMS = now
            try KeyTable.update(key, newHash: nil, in: db)
            return (
                key, [(enabled ? .keyEnabled : .keyDisabled, enabled ? "enabled" : "disabled", [])],
                .put(key, hash, replacing: nil)
            )
        }
    }

    /// Gives the key a new secret, keeping its id, name, permissions and settings. The old
    /// secret is refused from the moment this returns.
    public func rotateKey(id: String, actor: String, deadline: Deadline = .never) throws -> IssuedKey {
        let now = clock.nowMS()
        let secret = format.generate()
        let hash = SecretHash(of: secret)
        let key = try mutate(actor: actor, at: now, deadline: deadline) { db in
            var (key, oldHash) = try KeyTable.find(id: id, in: db)
            let oldHint = key.hint
            key.hint = format.hint(for: secret)
            key.rotatedAtMS = now
            key.updatedAtMS = now
            try KeyTable.update(key, newHash: hash, in: db)
            return (
                key, [(.keyRotated, "secret \(oldHint) replaced by \(key.hint)", [])],
                .put(key, hash, replacing: oldHash)
            )
        }
        return IssuedKey(key: key, secret: secret)
    }

    /// Deletes the key for good. Its audit events stay.
    public func deleteKey(id: String, actor: String, deadline: Deadline = .never) throws {
        try mutate(actor: actor, at: clock.nowMS(), deadline: deadline) { db in
            let (key, hash) = try KeyTable.find(id: id, in: db)
            try KeyTable.delete(id: id, in: db)
            return (key, [(.keyDeleted, "deleted", [])], .remove(key.id, hash))
        }
    }

    /// What a committed mutation does to the check index.
    enum IndexChange {
        /// The key's new state under `hash`, forgetting `replacing` (a rotated secret).
        case put(KeyRecord, SecretHash, replacing: SecretHash?)
        /// Forget the secret of the key with this id.
        case remove(String, SecretHash)

        var keyID: String {
            switch self {
            case .put(let key, _, _): key.id
            case .remove(let id, _): id
            }
        }
    }

    /// Runs `change` on one key and writes the audit events it returns (stamped `now`, the time
    /// the caller also wrote into the key) in one transaction, then applies its index change.
    @discardableResult
    private func mutate(
        actor: String, at now: Int64, deadline: Deadline,
        _ change: (SQLiteConnection) throws -> (KeyRecord, [(AuditAction, String, [String])], IndexChange?)
    ) throws -> KeyRecord {
        try commit(deadline: deadline) { db in
            let (key, events, indexChange) = try change(db)
            for (action, detail, permissions) in events {
                try recordAdminEvent(
                    action, keyID: key.id, keyName: key.name, actor: actor, detail: detail, permissions: permissions,
                    at: now, in: db)
            }
            return (key, indexChange.map { [$0] } ?? [])
        }
    }

    /// The one way a mutation reaches the database and the check index. Under the admin lock:
    /// refuse a passed deadline before BEGIN, run `body` in a transaction that is rolled back if
    /// the deadline passes before COMMIT, then apply the index changes of what committed. The
    /// index therefore changes in commit order: a later mutation of the same key (a delete
    /// landing right after a create) can never be undone by an earlier one's index update.
    func commit<R>(
        deadline: Deadline, _ body: (SQLiteConnection) throws -> (R, [IndexChange])
    ) throws -> R {
        try withAdmin { db in
            try deadline.check()
            let (result, changes) = try db.transaction(beforeCommit: { try deadline.check() }) { try body(db) }
            commitHook.withLock { $0 }?(changes.map(\.keyID))
            for change in changes {
                switch change {
                case .put(let key, let hash, let old): index.upsert(key.checkState(in: catalog), hash: hash, replacing: old)
                case .remove(_, let hash): index.remove(hash: hash)
                }
            }
            return result
        }
    }

    /// Writes one admin audit event in the caller's transaction, numbered now.
    func recordAdminEvent(
        _ action: AuditAction, keyID: String = "", keyName: String = "", actor: String, detail: String,
        permissions: [String] = [], at now: Int64, in db: SQLiteConnection
    ) throws {
        try AuditTable.insert(
            AuditRecord(
                seq: takeSeq(), atMS: now, action: action, keyID: keyID, keyName: keyName, actor: actor,
                detail: detail, permissions: permissions),
            in: db)
    }

    /// An expiry in words for audit details: an ISO 8601 UTC time, or `never`.
    static func describe(_ expiry: Int64?) -> String {
        guard let expiry else { return "never" }
        return Date(timeIntervalSince1970: Double(expiry) / 1000).formatted(.iso8601)
    }
}
