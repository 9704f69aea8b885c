import Foundation
import APIKeysCore

extension KeyService {
    /// A key with its raw secret: the result of create and rotate. The secret is not kept.
    public struct IssuedKey: Sendable, Hashable {
        public var key: KeyRecord
        public var secret: String
    }

    /// Creates a key. Throws ``KeyError`` for an invalid name, permission or expiry.
    public func createKey(name: String, permissions: [String], expiresAtMS: Int64 = 0, actor: String) throws -> IssuedKey {
        let now = clock.nowMS()
        let name = try KeyRules.validName(name)
        let permissions = try catalog.validate(permissions)
        let expiry = try KeyRules.validExpiry(expiresAtMS, nowMS: now)
        let secret = format.generate()
        let hash = SecretHash(of: secret)
        let key = KeyRecord(
            id: KeyRecord.newID(), name: name, hint: format.hint(for: secret), permissions: permissions,
            enabled: true, createdAtMS: now, updatedAtMS: now, expiresAtMS: expiry)
        try mutate(actor: actor) { db in
            try KeyTable.insert(key, hash: hash, in: db)
            index.upsert(key.checkState, hash: hash)
            return (key, [(.keyCreated, "created; expires \(Self.describe(expiry))", permissions)])
        }
        return IssuedKey(key: key, secret: secret)
    }

    /// The key with `id`.
    public func getKey(id: String) throws -> KeyRecord {
        try withAdmin { try KeyTable.find(id: id, in: $0) }
    }

    /// One page of keys, oldest first; `pageToken` is the previous page's `nextPageToken`.
    public func listKeys(pageSize: Int = 0, pageToken: String? = nil) throws -> (keys: [KeyRecord], nextPageToken: String?) {
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
        id: String, name: String? = nil, expiresAtMS: Int64? = nil, permissions: [String]? = nil, actor: String
    ) throws -> KeyRecord {
        let now = clock.nowMS()
        let newName = try name.map { name throws(KeyError) in try KeyRules.validName(name) }
        let newExpiry = try expiresAtMS.map { expiry throws(KeyError) in try KeyRules.validExpiry(expiry, nowMS: now) }
        let newPermissions = try permissions.map { names throws(KeyError) in try catalog.validate(names) }
        return try mutate(actor: actor) { db in
            var key = try KeyTable.find(id: id, in: db)
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
                let detail = "permissions [\(key.permissions.joined(separator: " "))] → [\(newPermissions.joined(separator: " "))]"
                events.append((.keyPermissionsChanged, detail, newPermissions))
                key.permissions = newPermissions
            }
            guard !events.isEmpty else { return (key, []) }
            key.updatedAtMS = now
            try KeyTable.update(key, newHash: nil, in: db)
            index.update(key.checkState)
            return (key, events)
        }
    }

    /// Enables or disables the key; a disabled key is refused from the moment this returns.
    public func setEnabled(id: String, enabled: Bool, actor: String) throws -> KeyRecord {
        let now = clock.nowMS()
        return try mutate(actor: actor) { db in
            var key = try KeyTable.find(id: id, in: db)
            guard key.enabled != enabled else { return (key, []) }
            key.enabled = enabled
            key.updatedAtMS = now
            try KeyTable.update(key, newHash: nil, in: db)
            index.update(key.checkState)
            return (key, [(enabled ? .keyEnabled : .keyDisabled, enabled ? "enabled" : "disabled", [])])
        }
    }

    /// Gives the key a new secret, keeping its id, name, permissions and settings. The old
    /// secret is refused from the moment this returns.
    public func rotateKey(id: String, actor: String) throws -> IssuedKey {
        let now = clock.nowMS()
        let secret = format.generate()
        let hash = SecretHash(of: secret)
        let key = try mutate(actor: actor) { db in
            var key = try KeyTable.find(id: id, in: db)
            let oldHint = key.hint
            key.hint = format.hint(for: secret)
            key.rotatedAtMS = now
            key.updatedAtMS = now
            try KeyTable.update(key, newHash: hash, in: db)
            index.upsert(key.checkState, hash: hash)
            return (key, [(.keyRotated, "secret \(oldHint) replaced by \(key.hint)", [])])
        }
        return IssuedKey(key: key, secret: secret)
    }

    /// Deletes the key for good. Its audit events stay.
    public func deleteKey(id: String, actor: String) throws {
        _ = try mutate(actor: actor) { db in
            let key = try KeyTable.find(id: id, in: db)
            try KeyTable.delete(id: id, in: db)
            index.remove(id: id)
            return (key, [(.keyDeleted, "deleted", [])])
        }
    }

    /// Runs `change` and writes the audit events it returns in one transaction. `change` updates
    /// the index itself, after its SQL succeeded; should the commit then fail, the index is
    /// reloaded for that key from the database so it never runs ahead of what is stored.
    @discardableResult
    private func mutate(
        actor: String,
        _ change: (SQLiteConnection) throws -> (KeyRecord, [(AuditAction, String, [String])])
    ) throws -> KeyRecord {
        let now = clock.nowMS()
        return try withAdmin { db in
            var touchedID: String?
            do {
                return try db.transaction {
                    let (key, events) = try change(db)
                    touchedID = key.id
                    for (action, detail, permissions) in events {
                        try AuditTable.insert(
                            AuditRecord(
                                seq: takeSeq(), atMS: now, action: action, keyID: key.id, keyName: key.name,
                                actor: actor, detail: detail, permissions: permissions),
                            in: db)
                    }
                    return key
                }
            } catch {
                if let touchedID { try? reloadIndex(id: touchedID, db: db) }
                throw error
            }
        }
    }

    /// Makes the index agree with the database for one key.
    private func reloadIndex(id: String, db: SQLiteConnection) throws {
        index.remove(id: id)
        let digest = try db.statement("SELECT secret_hash FROM keys WHERE id = ?").bind(.text(id)).firstRow { $0.blob(0) }
        guard let digest, let hash = SecretHash(digest: digest) else { return }
        index.upsert(try KeyTable.find(id: id, in: db).checkState, hash: hash)
    }

    /// An expiry in words for audit details: an ISO 8601 UTC time, or `never`.
    static func describe(_ expiry: Int64?) -> String {
        guard let expiry else { return "never" }
        return Date(timeIntervalSince1970: Double(expiry) / 1000).formatted(.iso8601)
    }
}
