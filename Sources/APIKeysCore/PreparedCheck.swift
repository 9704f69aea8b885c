/// What a check asks (its permissions, resource and client address), validated against
/// ``CheckLimits`` and its permissions resolved against the catalog, once. A connection mostly
/// asks the same again (one service, one key, the same permissions): a check that asks exactly
/// the same reuses it, is not validated again, and is judged by one mask test instead of a
/// lookup per permission name. Reusing it changes no answer: it is a pure function of the
/// request's fields and the catalog, which a service never changes.
public struct PreparedCheck: Sendable {
    /// As asked, in order (duplicates kept: the audit trail records what was asked).
    public let permissions: [String]
    /// As the audit trail records it (``CheckLimits/recorded(resource:)``).
    public let recordedResource: String
    public let clientAddress: String
    /// `permissions` as a mask of the catalog.
    let requirement: PermissionCatalog.Requirement

    /// Throws what ``CheckLimits/validate(permissions:resource:clientAddress:)`` throws.
    public init(permissions: [String], resource: String, clientAddress: String, catalog: PermissionCatalog)
        throws(KeyError)
    {
        try CheckLimits.validate(permissions: permissions, resource: resource, clientAddress: clientAddress)
        self.permissions = permissions
        self.recordedResource = CheckLimits.recorded(resource: resource)
        self.clientAddress = clientAddress
        self.requirement = catalog.requirement(of: permissions)
    }
}
