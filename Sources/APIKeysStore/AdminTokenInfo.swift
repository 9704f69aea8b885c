import APIKeysCore

/// An admin token as stored and described: its name and grant, never its secret.
public struct AdminTokenInfo: Sendable, Hashable {
    public var name: String
    public var grant: AdminGrant
    public var createdAtMS: Int64

    public init(name: String, grant: AdminGrant, createdAtMS: Int64) {
        self.name = name
        self.grant = grant
        self.createdAtMS = createdAtMS
    }
}
