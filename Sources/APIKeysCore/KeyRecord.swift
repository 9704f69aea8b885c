/// An API key as stored: everything but the secret, of which only the hash is kept (elsewhere).
public struct KeyRecord: Sendable, Hashable {
    /// Stable public id, unchanged by rotation.
    public var id: String
    public var name: String
    /// Identifies the secret in lists without revealing it.
    public var hint: String
    /// Granted permissions, in catalog order.
    public var permissions: [String]
    public var enabled: Bool
    public var createdAtMS: Int64
    public var updatedAtMS: Int64
    /// nil = never expires.
    public var expiresAtMS: Int64?
    /// nil = never used.
    public var lastUsedAtMS: Int64?
    /// nil = never rotated.
    public var rotatedAtMS: Int64?
    /// The networks checks must come from (their `client_address`), normalised CIDR; empty = any.
    public var allowedNetworks: [String]
    /// Until when the secret the key had before its last rotation is still accepted (a rotation
    /// with a grace period); nil = it is not.
    public var graceEndsAtMS: Int64?
    /// Allowed checks at most this often, per server; nil = no limit.
    public var rateLimit: KeyRateLimit?
    /// Usage credits: nil = unlimited.
    public var usage: UsageGrant?

    public init(
        id: String, name: String, hint: String, permissions: [String], enabled: Bool, createdAtMS: Int64,
        updatedAtMS: Int64, expiresAtMS: Int64? = nil, lastUsedAtMS: Int64? = nil, rotatedAtMS: Int64? = nil,
        allowedNetworks: [String] = [], graceEndsAtMS: Int64? = nil, rateLimit: KeyRateLimit? = nil,
        usage: UsageGrant? = nil
    ) {
        self.id = id
        self.name = name
        self.hint = hint
        self.permissions = permissions
        self.enabled = enabled
        self.createdAtMS = createdAtMS
        self.updatedAtMS = updatedAtMS
        self.expiresAtMS = expiresAtMS
        self.lastUsedAtMS = lastUsedAtMS
        self.rotatedAtMS = rotatedAtMS
        self.allowedNetworks = allowedNetworks
        self.graceEndsAtMS = graceEndsAtMS
        self.rateLimit = rateLimit
        self.usage = usage
    }

    /// A new public key id: `key_` and 22 random base-62 characters.
    public static func newID() -> String {
        "key_" + SecureRandom.string(count: 22, alphabet: SecretFormat.alphabet)
    }

    /// What a check needs to know about this key, its permissions as a mask of `catalog`: for its
    /// current secret, or with `ofGraceSecret` for the secret it had before its last rotation.
    public func checkState(in catalog: PermissionCatalog, ofGraceSecret: Bool = false) -> KeyCheckState {
        KeyCheckState(
            id: id, name: name, permissions: catalog.mask(of: permissions), enabled: enabled, expiresAtMS: expiresAtMS,
            allowedNetworks: allowedNetworks.compactMap(IPNetwork.init),
            graceEndsAtMS: ofGraceSecret ? graceEndsAtMS : nil, rateLimit: rateLimit, usage: usage)
    }
}

/// The part of a key that answers checks, held in memory.
///
/// Every check copies a key's state out of the index and into its outcome, so the fields sit
/// behind one immutable reference (``Box``): a copy is one retain, not one per string and array
/// (a change makes a new box). A million of these sit in the index, so the settings few keys
/// have (a grace secret, a rate limit, usage credits) are behind one more optional reference,
/// ``Extras``: 8 bytes for a key without them.
public struct KeyCheckState: Sendable, Hashable {
    private var box: Box

    /// The fields, immutable.
    final class Box: Sendable {
        let fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    struct Fields: Sendable, Hashable {
        var id: String
        var name: String
        var permissions: PermissionMask
        var expiresAtMS: Int64?
        // After the optional, so that it takes the optional's padding: 72 bytes a key, not 80.
        var enabled: Bool
        var allowedNetworks: [IPNetwork]
        var extras: Extras?
    }

    /// The bytes a key's state takes on the heap (its box: the object's header and the fields),
    /// besides its index slot's reference.
    package static var boxBytes: Int { 16 + MemoryLayout<Fields>.stride }

    private var fields: Fields { box.fields }
    private mutating func change(_ edit: (inout Fields) -> Void) {
        var fields = box.fields
        edit(&fields)
        box = Box(fields)
    }

    public var id: String {
        get { fields.id }
        set { change { $0.id = newValue } }
    }
    public var name: String {
        get { fields.name }
        set { change { $0.name = newValue } }
    }
    public var permissions: PermissionMask {
        get { fields.permissions }
        set { change { $0.permissions = newValue } }
    }
    public var expiresAtMS: Int64? {
        get { fields.expiresAtMS }
        set { change { $0.expiresAtMS = newValue } }
    }
    public var enabled: Bool {
        get { fields.enabled }
        set { change { $0.enabled = newValue } }
    }
    /// Empty = checks from any address.
    public var allowedNetworks: [IPNetwork] {
        get { fields.allowedNetworks }
        set { change { $0.allowedNetworks = newValue } }
    }
    private var extras: Extras? { fields.extras }

    public static func == (lhs: KeyCheckState, rhs: KeyCheckState) -> Bool {
        lhs.box === rhs.box || lhs.fields == rhs.fields
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(fields) }

    /// Whether `other` is this very state (a copy of it), not a state with equal fields.
    public func isSameInstance(as other: KeyCheckState) -> Bool { box === other.box }

    /// What few keys have, immutable (a change makes a new one).
    final class Extras: Sendable, Hashable {
        let graceEndsAtMS: Int64?
        let rateLimit: KeyRateLimit?
        let usage: UsageGrant?
        let rateBucket: RateBucket?
        let usageCredits: UsageCredits?

        init(
            graceEndsAtMS: Int64?, rateLimit: KeyRateLimit?, usage: UsageGrant?, rateBucket: RateBucket?,
            usageCredits: UsageCredits?
        ) {
            self.graceEndsAtMS = graceEndsAtMS
            self.rateLimit = rateLimit
            self.usage = usage
            self.rateBucket = rateBucket
            self.usageCredits = usageCredits
        }

        /// nil when it would hold nothing.
        static func make(
            graceEndsAtMS: Int64?, rateLimit: KeyRateLimit?, usage: UsageGrant?, rateBucket: RateBucket?,
            usageCredits: UsageCredits?
        ) -> Extras? {
            guard graceEndsAtMS != nil || rateLimit != nil || usage != nil || rateBucket != nil || usageCredits != nil
            else { return nil }
            return Extras(
                graceEndsAtMS: graceEndsAtMS, rateLimit: rateLimit, usage: usage, rateBucket: rateBucket,
                usageCredits: usageCredits)
        }

        static func == (lhs: Extras, rhs: Extras) -> Bool {
            lhs.graceEndsAtMS == rhs.graceEndsAtMS && lhs.rateLimit == rhs.rateLimit && lhs.usage == rhs.usage
                && lhs.rateBucket == rhs.rateBucket && lhs.usageCredits == rhs.usageCredits
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(graceEndsAtMS)
            hasher.combine(rateLimit)
            hasher.combine(usage)
        }
    }

    /// Rebuilds ``extras`` with the settings given (`.some(nil)` clears one), keeping the meters.
    private mutating func changeExtras(
        graceEndsAtMS: Int64?? = nil, rateLimit: KeyRateLimit?? = nil, usage: UsageGrant?? = nil
    ) {
        let extras = Extras.make(
            graceEndsAtMS: graceEndsAtMS ?? self.extras?.graceEndsAtMS, rateLimit: rateLimit ?? self.extras?.rateLimit,
            usage: usage ?? self.extras?.usage, rateBucket: self.extras?.rateBucket,
            usageCredits: self.extras?.usageCredits)
        change { $0.extras = extras }
    }

    /// Set on the entry of a secret replaced by a rotation with a grace period: the secret is
    /// accepted until then, and refused as unknown from then on. nil for a key's current secret.
    public var graceEndsAtMS: Int64? {
        get { extras?.graceEndsAtMS }
        set { changeExtras(graceEndsAtMS: .some(newValue)) }
    }
    /// The key's rate limit (nil: none); its bucket is ``rateBucket``.
    public var rateLimit: KeyRateLimit? {
        get { extras?.rateLimit }
        set { changeExtras(rateLimit: .some(newValue)) }
    }
    /// This server's token bucket for the key, shared by the entries of all its secrets; set by
    /// the ``KeyIndex`` when the entry goes in (nil: no limit).
    public var rateBucket: RateBucket? { extras?.rateBucket }
    /// The key's usage credits as stored (nil: unlimited); counted by ``usageCredits``.
    public var usage: UsageGrant? {
        get { extras?.usage }
        set { changeExtras(usage: .some(newValue)) }
    }
    /// This server's count of the key's credits, shared by the entries of all its secrets; set by
    /// the ``KeyIndex`` when the entry goes in (nil: unlimited).
    public var usageCredits: UsageCredits? { extras?.usageCredits }

    public init(
        id: String, name: String, permissions: PermissionMask, enabled: Bool, expiresAtMS: Int64?,
        allowedNetworks: [IPNetwork] = [], graceEndsAtMS: Int64? = nil, rateLimit: KeyRateLimit? = nil,
        usage: UsageGrant? = nil
    ) {
        box = Box(
            Fields(
                id: id, name: name, permissions: permissions, expiresAtMS: expiresAtMS, enabled: enabled,
                allowedNetworks: allowedNetworks,
                extras: Extras.make(
                    graceEndsAtMS: graceEndsAtMS, rateLimit: rateLimit, usage: usage, rateBucket: nil,
                    usageCredits: nil)))
    }

    /// A copy with this server's meters for the key (``KeyIndex``), in one step.
    func withMeters(bucket: RateBucket?, credits: UsageCredits?) -> KeyCheckState {
        var copy = self
        copy.change {
            $0.extras = Extras.make(
                graceEndsAtMS: graceEndsAtMS, rateLimit: rateLimit, usage: usage, rateBucket: bucket,
                usageCredits: credits)
        }
        return copy
    }

    /// Whether this is the entry of a secret replaced by a rotation with a grace period.
    public var isGraceSecret: Bool { extras?.graceEndsAtMS != nil }

    /// Whether this is a grace secret whose grace is over at `nowMS`: dead, as if rotated without one.
    public func graceIsOver(atMS nowMS: Int64) -> Bool { extras?.graceEndsAtMS.map { $0 <= nowMS } ?? false }

    /// Whether a check from `clientAddress` may use this key: any address when the key has no
    /// allowlist; else one of its networks (an absent or unreadable address is not).
    public func admits(clientAddress: String) -> Bool {
        guard !allowedNetworks.isEmpty else { return true }
        guard let address = IPNetwork.address(clientAddress) else { return false }
        return allowedNetworks.contains { $0.contains(address) }
    }
}
