import APIKeysCore

/// Who makes a key change: the name its audit events record and, for a caller that presented an
/// admin token, that token's hash.
///
/// A change made with a token commits only while the token is still valid: the store checks it
/// again in the change's transaction, so a revocation holds from the moment it returns, for calls
/// already in flight too, on every replica. A string literal is an actor without a token (tools
/// and tests acting locally).
public struct AdminActor: Sendable, Hashable, ExpressibleByStringLiteral {
    /// The admin token's name (or the local tool's), recorded as the actor of audit events.
    public var name: String
    /// The hash of the token the caller presented; nil for a local caller.
    public var token: SecretHash?
    /// What the token may do (``AdminGrant``); nil for a local caller, who may do everything.
    public var grant: AdminGrant?

    public init(name: String, token: SecretHash? = nil, grant: AdminGrant? = nil) {
        self.name = name
        self.token = token
        self.grant = grant
    }

    /// Throws ``KeyError/permissionDenied(_:)`` unless the actor's scope reaches `scope`.
    public func require(_ scope: AdminGrant.Scope, for what: String) throws(KeyError) {
        guard let grant, grant.scope < scope else { return }
        throw KeyError.permissionDenied("\(what) needs scope \(scope.rawValue); this token has \(grant.scope.rawValue)")
    }

    public init(stringLiteral name: String) { self.init(name: name) }
}
