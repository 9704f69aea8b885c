import APIKeysJSON
import APIKeysServer
import APIKeysWire
import Foundation

/// A JSON request body: decoded strictly (``AdminRequestBody/decode(_:)``), so a misspelt or
/// unknown field is refused with its name instead of being ignored.
protocol AdminRequestBody: Decodable {
    /// The fields the body may hold, as JSON spells them.
    static var fields: Set<String> { get }
    /// The fields that may be `null` (PATCH's "clear it"); elsewhere null is refused, not read as absent.
    static var nullable: Set<String> { get }
}

extension AdminRequestBody {
    static var nullable: Set<String> { [] }

    /// `bytes` as this body: a JSON object with known fields of the right types, else a
    /// ``RPCError`` (INVALID_ARGUMENT, 400) naming the field.
    static func decode(_ bytes: Data) throws -> Self {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: bytes)
        } catch {
            throw RPCError(.invalidArgument, "the body is not valid JSON")
        }
        guard let fieldsGiven = object as? [String: Any] else {
            throw RPCError(.invalidArgument, "the body must be a JSON object")
        }
        if let unknown = fieldsGiven.keys.sorted().first(where: { !fields.contains($0) }) {
            throw RPCError(
                .invalidArgument, "unknown field \"\(unknown)\"; known: \(fields.sorted().joined(separator: ", "))")
        }
        if let null = Self.nullField(in: fieldsGiven, allowed: nullable) {
            throw RPCError(.invalidArgument, "field \"\(null)\": null is not a value here (leave the field out)")
        }
        do {
            return try JSONDecoder().decode(Self.self, from: bytes)
        } catch let error as DecodingError {
            throw RPCError(.invalidArgument, Self.describe(error))
        } catch let refusal as RPCError {
            throw refusal
        } catch {
            throw RPCError(.invalidArgument, "the body does not match the request's schema")
        }
    }

    /// The first field holding null, at any depth, except the top-level ones `allowed`.
    private static func nullField(in object: [String: Any], allowed: Set<String>, path: String = "") -> String? {
        for (name, value) in object.sorted(by: { $0.key < $1.key }) {
            let field = path.isEmpty ? name : "\(path).\(name)"
            if value is NSNull, !(path.isEmpty && allowed.contains(name)) { return field }
            if let nested = value as? [String: Any], let found = nullField(in: nested, allowed: [], path: field) {
                return found
            }
            if let array = value as? [Any], array.contains(where: { $0 is NSNull }) { return field }
        }
        return nil
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ codingPath: [any CodingKey]) -> String {
            codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().drop(while: { $0 == "." })
                .description
        }
        switch error {
        case .typeMismatch(let type, let context):
            return "field \"\(path(context.codingPath))\": expected \(Self.describe(type))"
        case .valueNotFound(let type, let context):
            return "field \"\(path(context.codingPath))\": expected \(Self.describe(type)), not null"
        case .keyNotFound(let key, let context):
            return "field \"\(path(context.codingPath + [key]))\" is required"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty
                ? "the body is not valid JSON" : "field \"\(path(context.codingPath))\": \(context.debugDescription)"
        @unknown default:
            return "the body does not match the request's schema"
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "true or false"
        case is [String].Type: "an array of strings"
        case is Int64.Type, is UInt32.Type, is Int.Type: "an integer"
        default: "a value of another type"
        }
    }
}

/// A time in a request: RFC 3339 (`2027-01-31T00:00:00Z`).
struct RequestTime: Decodable {
    let ms: Int64

    init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let ms = JSONTime.milliseconds(rfc3339: text) else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: decoder.codingPath, debugDescription: "not an RFC 3339 date-time (2027-01-31T00:00:00Z)"
                ))
        }
        self.ms = ms
    }
}

/// A rate limit in a request: `{"requests": 100, "period_seconds": 1, "burst": 200}`.
struct RequestRateLimit: Decodable {
    let requests: UInt32
    let periodSeconds: UInt32?
    let burst: UInt32?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case requests, periodSeconds = "period_seconds", burst
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let unknown = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue)
            .filter { CodingKeys(rawValue: $0) == nil }
        if let first = unknown.sorted().first {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "unknown field \"\(first)\""))
        }
        requests = try container.decode(UInt32.self, forKey: .requests)
        periodSeconds = try container.decodeIfPresent(UInt32.self, forKey: .periodSeconds)
        burst = try container.decodeIfPresent(UInt32.self, forKey: .burst)
    }

    var wire: RateLimit { RateLimit(requests: requests, periodSeconds: periodSeconds ?? 0, burst: burst ?? 0) }
}

/// Any key of a JSON object.
struct AnyKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// `POST /v1/keys`.
struct CreateKeyBody: AdminRequestBody {
    let name: String
    let permissions: [String]
    let expiresAt: RequestTime?
    let allowedNetworks: [String]?
    let rateLimit: RequestRateLimit?
    let remainingUses: Int64?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, permissions, expiresAt = "expires_at", allowedNetworks = "allowed_networks",
            rateLimit = "rate_limit", remainingUses = "remaining_uses"
    }
    static let fields = Set(CodingKeys.allCases.map(\.rawValue))

    var request: CreateKeyRequest {
        CreateKeyRequest(
            name: name, permissions: permissions, expiresAtMS: expiresAt?.ms ?? 0,
            allowedNetworks: allowedNetworks ?? [], rateLimit: rateLimit?.wire, remainingUses: remainingUses)
    }
}

/// `PATCH /v1/keys/{id}`: an absent field is unchanged; `null` clears what can be cleared
/// (`expires_at`: never expires; `rate_limit`: no limit; `remaining_uses`: unlimited).
struct UpdateKeyBody: AdminRequestBody {
    var request = UpdateKeyRequest()

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, permissions, expiresAt = "expires_at", allowedNetworks = "allowed_networks",
            rateLimit = "rate_limit", remainingUses = "remaining_uses"
    }
    static let fields = Set(CodingKeys.allCases.map(\.rawValue))
    static let nullable: Set<String> = ["expires_at", "rate_limit", "remaining_uses"]

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        request.name = try container.decodeIfPresent(String.self, forKey: .name)
        if let permissions = try container.decodeIfPresent([String].self, forKey: .permissions) {
            request.permissions = PermissionSet(names: permissions)
        }
        if let networks = try container.decodeIfPresent([String].self, forKey: .allowedNetworks) {
            request.allowedNetworks = NetworkList(networks: networks)
        }
        if container.contains(.expiresAt) {
            request.expiresAtMS =
                try container.decodeNil(forKey: .expiresAt)
                ? 0 : try container.decode(RequestTime.self, forKey: .expiresAt).ms
        }
        if container.contains(.rateLimit) {
            request.rateLimit =
                try container.decodeNil(forKey: .rateLimit)
                ? RateLimit() : try container.decode(RequestRateLimit.self, forKey: .rateLimit).wire
        }
        if container.contains(.remainingUses) {
            request.remainingUses =
                try container.decodeNil(forKey: .remainingUses)
                ? -1 : try container.decode(Int64.self, forKey: .remainingUses)
        }
    }
}

/// `POST /v1/keys/{id}/rotate`: the body may be empty.
struct RotateKeyBody: AdminRequestBody {
    let graceSeconds: UInt32?

    enum CodingKeys: String, CodingKey, CaseIterable { case graceSeconds = "grace_seconds" }
    static let fields = Set(CodingKeys.allCases.map(\.rawValue))
}

/// `POST /v1/admin-tokens`.
struct CreateAdminTokenBody: AdminRequestBody {
    let name: String
    let scope: String
    let ceiling: [String]?
    let maxKeyLifetimeSeconds: Int64?
    let expiresAt: RequestTime?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, scope, ceiling, maxKeyLifetimeSeconds = "max_key_lifetime_seconds", expiresAt = "expires_at"
    }
    static let fields = Set(CodingKeys.allCases.map(\.rawValue))

    func request() throws -> CreateAdminTokenRequest {
        guard let scope = AdminScope(name: scope) else {
            throw RPCError(.invalidArgument, "field \"scope\": one of read, keys, admin")
        }
        guard (maxKeyLifetimeSeconds ?? 1) > 0, (maxKeyLifetimeSeconds ?? 0) <= Int64.max / 1000 else {
            throw RPCError(.invalidArgument, "field \"max_key_lifetime_seconds\": a positive number of seconds")
        }
        return CreateAdminTokenRequest(
            name: name, scope: scope, ceiling: ceiling ?? [], maxKeyLifetimeMS: (maxKeyLifetimeSeconds ?? 0) * 1000,
            expiresAtMS: expiresAt?.ms ?? 0)
    }
}

/// `POST /v1/check`: a Check, as the RPC port answers it.
struct CheckBody: AdminRequestBody {
    let key: String
    let permissions: [String]?
    let resource: String?
    let clientAddress: String?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case key, permissions, resource, clientAddress = "client_address"
    }
    static let fields = Set(CodingKeys.allCases.map(\.rawValue))
}
