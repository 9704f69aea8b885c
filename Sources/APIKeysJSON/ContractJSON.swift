import APIKeysWire
import Foundation

// The JSON forms of the contract's messages: one naming for `apikey --json` and the HTTP admin
// API. Names are snake_case as the proto spells its fields (`created_at_ms`, `key_id`); each
// time is there in milliseconds since 1970 and beside it in RFC 3339 UTC (`created_at`, absent
// when the time is not set).

/// An API key, never its secret.
public struct KeyJSON: Codable, Sendable, Equatable {
    public let id, name, hint: String
    public let permissions: [String]
    public let enabled: Bool
    public let createdAtMS, updatedAtMS, expiresAtMS, lastUsedAtMS, rotatedAtMS: Int64
    /// Until when the secret replaced by the last rotation is accepted; 0 = not at all.
    public let graceEndsAtMS: Int64
    public let createdAt, updatedAt, expiresAt, lastUsedAt, rotatedAt, graceEndsAt: String?
    /// Empty = any address.
    public let allowedNetworks: [String]
    /// nil = no limit.
    public let rateLimit: RateLimitJSON?
    /// Usage credits left; nil = unlimited.
    public let remainingUses: Int64?

    public init(_ key: ApiKey) {
        (id, name, hint, permissions, enabled) = (key.id, key.name, key.hint, key.permissions, key.enabled)
        allowedNetworks = key.allowedNetworks
        remainingUses = key.remainingUses
        rateLimit = key.hasRateLimit ? RateLimitJSON(key.rateLimit) : nil
        (createdAtMS, updatedAtMS, expiresAtMS) = (key.createdAtMS, key.updatedAtMS, key.expiresAtMS)
        (lastUsedAtMS, rotatedAtMS, graceEndsAtMS) = (key.lastUsedAtMS, key.rotatedAtMS, key.graceEndsAtMS)
        (createdAt, updatedAt, expiresAt) = (
            JSONTime.rfc3339(createdAtMS), JSONTime.rfc3339(updatedAtMS), JSONTime.rfc3339(expiresAtMS)
        )
        (lastUsedAt, rotatedAt, graceEndsAt) = (
            JSONTime.rfc3339(lastUsedAtMS), JSONTime.rfc3339(rotatedAtMS), JSONTime.rfc3339(graceEndsAtMS)
        )
    }
}

/// A key's rate limit: `requests` per `period_seconds`, bursts up to `burst`.
public struct RateLimitJSON: Codable, Sendable, Equatable {
    public let requests, periodSeconds, burst: UInt32

    public init(requests: UInt32, periodSeconds: UInt32, burst: UInt32) {
        (self.requests, self.periodSeconds, self.burst) = (requests, periodSeconds, burst)
    }

    public init(_ limit: RateLimit) {
        self.init(requests: limit.requests, periodSeconds: limit.periodSeconds, burst: limit.burst)
    }

    public var wire: RateLimit { RateLimit(requests: requests, periodSeconds: periodSeconds, burst: burst) }
}

/// A key with its secret, shown this once (create, rotate).
public struct IssuedKeyJSON: Codable, Sendable, Equatable {
    public let key: KeyJSON
    public let secret: String

    public init(key: KeyJSON, secret: String) { (self.key, self.secret) = (key, secret) }
}

/// An admin token, never its secret.
public struct AdminTokenJSON: Codable, Sendable, Equatable {
    public let name, scope: String
    /// Empty = any permission.
    public let ceiling: [String]
    /// 0 = no limit of its own.
    public let maxKeyLifetimeMS: Int64
    public let createdAtMS, expiresAtMS: Int64
    /// To within a minute; 0: never used.
    public let lastUsedAtMS: Int64
    public let createdAt, expiresAt, lastUsedAt: String?

    public init(_ token: AdminToken) {
        (name, scope, ceiling, maxKeyLifetimeMS) = (token.name, token.scope.name, token.ceiling, token.maxKeyLifetimeMS)
        (createdAtMS, expiresAtMS, lastUsedAtMS) = (token.createdAtMS, token.expiresAtMS, token.lastUsedAtMS)
        (createdAt, expiresAt) = (JSONTime.rfc3339(token.createdAtMS), JSONTime.rfc3339(token.expiresAtMS))
        lastUsedAt = JSONTime.rfc3339(token.lastUsedAtMS)
    }
}

/// An admin token with its secret, shown this once.
public struct IssuedAdminTokenJSON: Codable, Sendable, Equatable {
    public let token: AdminTokenJSON
    public let secret: String

    public init(token: AdminTokenJSON, secret: String) { (self.token, self.secret) = (token, secret) }
}

/// One audit event.
public struct AuditEventJSON: Codable, Sendable, Equatable {
    public let seq: UInt64
    public let atMS: Int64
    public let at: String?
    public let action, trigger, keyId, keyName, actor, detail: String
    /// `allow` or `deny` for checks, else empty; `reason` (a DenyReason name) when denied.
    public let decision, reason, resource, clientAddress: String
    public let permissions: [String]

    public init(_ event: AuditEvent) {
        (seq, atMS, action, trigger) = (event.seq, event.atMS, event.action, event.trigger)
        at = JSONTime.rfc3339(event.atMS)
        (keyId, keyName, actor, detail) = (event.keyID, event.keyName, event.actor, event.detail)
        switch event.decision {
        case .allow: decision = "allow"
        case .deny: decision = "deny"
        default: decision = ""
        }
        reason = event.reason == .unspecified ? "" : event.reason.name
        (resource, clientAddress, permissions) = (event.resource, event.clientAddress, event.permissions)
    }
}

/// A Check's answer.
public struct CheckJSON: Codable, Sendable, Equatable {
    /// `ALLOW` or `DENY`.
    public let decision: String
    public let httpStatus: UInt32
    /// A DenyReason name when denied.
    public let reason: String?
    public let keyId, keyName: String
    public let missingPermissions: [String]

    public init(_ answer: CheckResponse) {
        decision = answer.decision == .allow ? "ALLOW" : "DENY"
        httpStatus = answer.httpStatus
        reason = answer.decision == .allow ? nil : answer.reason.name
        (keyId, keyName, missingPermissions) = (answer.keyID, answer.keyName, answer.missingPermissions)
    }
}

/// A permission of the catalog.
public struct PermissionJSON: Codable, Sendable, Equatable {
    public let name, description: String

    public init(_ permission: Permission) { (name, description) = (permission.name, permission.description) }
}

/// Times in JSON documents.
public enum JSONTime {
    /// `ms` (since 1970, UTC) in RFC 3339 with milliseconds (`2026-12-05T10:00:00.000Z`); nil for 0 (not set).
    public static func rfc3339(_ ms: Int64) -> String? {
        guard ms != 0 else { return nil }
        // Whole seconds by the formatter, milliseconds by integer arithmetic: a Double of
        // seconds would round some times a millisecond down.
        let (seconds, millis) = ms.quotientAndRemainder(dividingBy: 1000)
        let (whole, fraction) = millis < 0 ? (seconds - 1, millis + 1000) : (seconds, millis)
        let text = Date(timeIntervalSince1970: Double(whole)).formatted(.iso8601)  // 2026-12-05T10:00:00Z
        let digits = String(fraction)
        return text.dropLast() + "." + String(repeating: "0", count: 3 - digits.count) + digits + "Z"
    }

    /// Milliseconds since 1970 of an RFC 3339 date-time (`2026-12-05T10:00:00Z`, fractions and
    /// offsets allowed); nil when `text` is not one.
    public static func milliseconds(rfc3339 text: String) -> Int64? {
        let withFraction = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        guard let date = (try? withFraction.parse(text)) ?? (try? Date.ISO8601FormatStyle().parse(text)) else {
            return nil
        }
        return Int64((date.timeIntervalSince1970 * 1000).rounded())
    }
}

/// Encoders and decoders with the contract's JSON naming.
public enum ContractJSON {
    /// snake_case names, keys sorted; `pretty` for people (the CLI), compact for the API.
    public static func encoder(pretty: Bool) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}

extension DenyReason {
    /// The reason's name as the contract spells it (`MISSING_PERMISSION`).
    public var name: String {
        switch self {
        case .malformedKey: "MALFORMED_KEY"
        case .unknownKey: "UNKNOWN_KEY"
        case .disabled: "DISABLED"
        case .expired: "EXPIRED"
        case .missingPermission: "MISSING_PERMISSION"
        case .ipNotAllowed: "IP_NOT_ALLOWED"
        case .rateLimited: "RATE_LIMITED"
        case .usageExceeded: "USAGE_EXCEEDED"
        case .invalidRequest: "INVALID_REQUEST"
        case .unspecified: "UNSPECIFIED"
        case .unrecognized(let value): "REASON_\(value)"
        }
    }
}

extension AdminScope {
    /// The scope's name as `--scope` and the admin API take it: `read`, `keys`, `admin`.
    public var name: String {
        switch self {
        case .read: "read"
        case .keys: "keys"
        case .admin: "admin"
        default: "unknown"
        }
    }

    /// The scope named `name`, if one is.
    public init?(name: String) {
        guard let scope = [AdminScope.read, .keys, .admin].first(where: { $0.name == name }) else { return nil }
        self = scope
    }
}
