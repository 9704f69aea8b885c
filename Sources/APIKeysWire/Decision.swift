internal import CAPIKeysProto

/// The outcome of a check.
public enum Decision: Hashable, Sendable {
    case unspecified
    case allow
    case deny
    /// A value this version of the contract does not know (proto3 enums are open).
    case unrecognized(Int32)

    public init(rawValue: Int32) {
        switch rawValue {
        case 0: self = .unspecified
        case 1: self = .allow
        case 2: self = .deny
        default: self = .unrecognized(rawValue)
        }
    }

    public var rawValue: Int32 {
        switch self {
        case .unspecified: 0
        case .allow: 1
        case .deny: 2
        case .unrecognized(let value): value
        }
    }
}

/// Why a check was denied; where several apply, the first case listed wins.
public enum DenyReason: Hashable, Sendable {
    case unspecified
    /// Wrong prefix, length, alphabet or check digits (401).
    case malformedKey
    /// Well-formed but not a live key (401).
    case unknownKey
    /// The key is disabled (401).
    case disabled
    /// The key has expired (401).
    case expired
    /// The key lacks a permission asked for (403).
    case missingPermission
    /// A value this version of the contract does not know (proto3 enums are open).
    case unrecognized(Int32)

    public init(rawValue: Int32) {
        switch rawValue {
        case 0: self = .unspecified
        case 1: self = .malformedKey
        case 2: self = .unknownKey
        case 3: self = .disabled
        case 4: self = .expired
        case 5: self = .missingPermission
        default: self = .unrecognized(rawValue)
        }
    }

    public var rawValue: Int32 {
        switch self {
        case .unspecified: 0
        case .malformedKey: 1
        case .unknownKey: 2
        case .disabled: 3
        case .expired: 4
        case .missingPermission: 5
        case .unrecognized(let value): value
        }
    }
}

// The protoc-c enums, bridged in one place (the C enums are UInt32, the contract's values Int32).
extension Decision {
    init(_ c: Apikeys__V1__Decision) { self.init(rawValue: Int32(bitPattern: c.rawValue)) }
    var cValue: Apikeys__V1__Decision { Apikeys__V1__Decision(rawValue: UInt32(bitPattern: rawValue)) }
}

extension DenyReason {
    init(_ c: Apikeys__V1__DenyReason) { self.init(rawValue: Int32(bitPattern: c.rawValue)) }
    var cValue: Apikeys__V1__DenyReason { Apikeys__V1__DenyReason(rawValue: UInt32(bitPattern: rawValue)) }
}
