import APIKeysCore

/// An admin token as stored and described: its name and grant, never its secret.
public struct AdminTokenInfo: Sendable, Hashable {
    public var name: String
    public var grant: AdminGrant
    public var createdAtMS: Int64
    /// The last call made with the token, to within ``KeyService/adminTokenUseResolutionMS``; 0: never.
    public var lastUsedAtMS: Int64

    public init(name: String, grant: AdminGrant, createdAtMS: Int64, lastUsedAtMS: Int64 = 0) {
        self.name = name
        self.grant = grant
        self.createdAtMS = createdAtMS
        self.lastUsedAtMS = lastUsedAtMS
    }
}
