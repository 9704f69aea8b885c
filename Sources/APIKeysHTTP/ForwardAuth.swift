import APIKeysCore
import APIKeysServer
import Foundation
import HTTPTypes

/// The forward-auth decision of `/authorize`, for nginx `auth_request`, Traefik `forwardAuth`,
/// Envoy `ext_authz` (HTTP) and Caddy `forward_auth`: the same check, the same audit event
/// (trigger `api`, the original method and URI as the resource) as the RPC Check.
///
/// - The key: `Authorization: Bearer dbm_…`, else `X-API-Key`.
/// - The permissions: `X-Required-Permissions` (comma-separated), else the route table's for the
///   original method and path (no matching route: 403), else none (a valid key is enough).
/// - The original request: `X-Original-Method`/`X-Original-URI` (nginx), else
///   `X-Forwarded-Method`/`X-Forwarded-Uri` (Traefik), else this request's own method and its
///   path after `/authorize` (Envoy's path prefix).
/// - The client address: the first of `X-Forwarded-For`, else the peer.
/// - A denial names its reason in `X-Deny-Reason` and in its JSON body; RATE_LIMITED is 429 with
///   `Retry-After`, or 403 when the request says `X-Rate-Limited-Status: 403` (nginx).
struct ForwardAuth: Sendable {
    let server: APIKeysServer
    let routes: RouteTable?

    /// The prefix this is served under.
    static let pathPrefix = "/authorize"

    struct Answer {
        var status: HTTPResponse.Status
        var headers: HTTPFields
        var body: String
    }

    func authorize(method: HTTPRequest.Method, path: String, headers: HTTPFields, peer: String) -> Answer {
        let original = Self.originalRequest(method: method, path: path, headers: headers)
        let key = Self.presentedKey(headers)
        guard !key.isEmpty else {
            return Self.answer(.unauthorized, reason: "NO_KEY", challenge: #"Bearer realm="apikeyd""#)
        }
        let permissions: [String]
        if let required = headers[Self.requiredPermissions] {
            permissions = required.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty }
        } else if let routes {
            guard let routed = routes.permissions(method: original.method, path: original.uri) else {
                return Self.answer(
                    .forbidden, reason: "NO_ROUTE",
                    challenge: #"Bearer realm="apikeyd", error="insufficient_scope""#)
            }
            permissions = routed
        } else {
            permissions = []
        }
        let forwardedFor = headers[Self.forwardedFor]?.split(separator: ",").first.map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        let outcome: CheckOutcome
        do {
            outcome = try server.check(
                secret: key, permissions: permissions, resource: "\(original.method) \(original.uri)",
                clientAddress: forwardedFor ?? peer)
        } catch let error as KeyError {
            return Self.answer(.badRequest, reason: "INVALID_ARGUMENT", message: error.description)
        } catch {
            // A replica past its staleness bound, or an audit trail that cannot take the check (a
            // stalled disk): fail closed, say which.
            return Self.answer(
                .serviceUnavailable, reason: "UNAVAILABLE",
                message: server.freshnessProblem ?? "the audit trail is behind")
        }
        guard let denial = outcome.denial else {
            var headers = HTTPFields()
            headers[Self.keyID] = outcome.key?.id
            headers[Self.keyName] = outcome.key.map { Self.headerSafe($0.name) }
            return Answer(status: .ok, headers: headers, body: "")
        }
        let reason = ServerMetrics.reasonLabel(denial).uppercased()
        if denial == .missingPermission {
            return Self.answer(
                .forbidden, reason: reason, missing: outcome.missingPermissions,
                challenge:
                    #"Bearer realm="apikeyd", error="insufficient_scope", scope=""#
                    + outcome.missingPermissions.joined(separator: " ") + #"""#)
        }
        if denial == .ipNotAllowed {
            return Self.answer(
                .forbidden, reason: reason, message: "this key may not be used from \(forwardedFor ?? peer)",
                challenge: #"Bearer realm="apikeyd", error="insufficient_scope", error_description="IP_NOT_ALLOWED""#)
        }
        if denial == .usageExceeded {
            return Self.answer(
                .forbidden, reason: reason, message: "this key's usage credits are spent",
                challenge: #"Bearer realm="apikeyd", error="insufficient_scope", error_description="USAGE_EXCEEDED""#)
        }
        if denial == .rateLimited {
            // nginx's auth_request passes on only 2xx, 401 and 403 (anything else becomes its own
            // 500): a proxy that asks for it gets 403, and maps it back by X-Deny-Reason.
            let status: HTTPResponse.Status =
                headers[Self.rateLimitedStatus] == "403" ? .forbidden : .tooManyRequests
            // Whole seconds, rounded up (RFC 9110 §10.2.3); the exact wait is in the body.
            var answer = Self.answer(status, reason: reason, message: "retry after \(outcome.retryAfterMS) ms")
            answer.headers[.retryAfter] = String((outcome.retryAfterMS + 999) / 1000)
            return answer
        }
        return Self.answer(
            .unauthorized, reason: reason,
            challenge: #"Bearer realm="apikeyd", error="invalid_token", error_description=""# + reason + #"""#)
    }

    private static func answer(
        _ status: HTTPResponse.Status, reason: String, missing: [String] = [], message: String? = nil,
        challenge: String? = nil
    ) -> Answer {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[denyReason] = reason
        if let challenge { headers[.wwwAuthenticate] = challenge }
        var body: [String: Any] = ["reason": reason]
        if !missing.isEmpty { body["missing_permissions"] = missing }
        if let message { body["message"] = message }
        let json = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data()
        return Answer(status: status, headers: headers, body: String(decoding: json, as: UTF8.self) + "\n")
    }

    private static func presentedKey(_ headers: HTTPFields) -> String {
        if let authorization = headers[.authorization] {
            let parts = authorization.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" {
                return parts[1].trimmingCharacters(in: .whitespaces)
            }
        }
        return headers[apiKey]?.trimmingCharacters(in: .whitespaces) ?? ""
    }

    private static func originalRequest(method: HTTPRequest.Method, path: String, headers: HTTPFields)
        -> (method: String, uri: String)
    {
        if let uri = headers[originalURI] { return (headers[originalMethod] ?? method.rawValue, uri) }
        if let uri = headers[forwardedURI] { return (headers[forwardedMethod] ?? method.rawValue, uri) }
        let rest = path.hasPrefix(pathPrefix) ? String(path.dropFirst(pathPrefix.count)) : path
        return (method.rawValue, rest.isEmpty ? "/" : rest)
    }

    /// A key name as a header value: printable ASCII, the rest percent-encoded.
    private static func headerSafe(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: headerCharacters) ?? ""
    }

    private static let headerCharacters = CharacterSet(
        charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 !#$&'()*+,-./:;=?@[]_~")

    static let requiredPermissions = HTTPField.Name("X-Required-Permissions")!
    static let apiKey = HTTPField.Name("X-API-Key")!
    static let originalMethod = HTTPField.Name("X-Original-Method")!
    static let originalURI = HTTPField.Name("X-Original-URI")!
    static let forwardedMethod = HTTPField.Name("X-Forwarded-Method")!
    static let forwardedURI = HTTPField.Name("X-Forwarded-Uri")!
    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!
    static let keyID = HTTPField.Name("X-Key-Id")!
    static let keyName = HTTPField.Name("X-Key-Name")!
    /// On every denial: its reason, for a proxy that cannot read the body.
    static let denyReason = HTTPField.Name("X-Deny-Reason")!
    /// `403` asks for a rate-limited check to be answered 403 instead of 429.
    static let rateLimitedStatus = HTTPField.Name("X-Rate-Limited-Status")!
}
