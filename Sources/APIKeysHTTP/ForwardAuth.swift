import APIKeysCore
import APIKeysServer
import Foundation
import Metrics
import NIOCore
import NIOHTTP1

/// The proxy in front of forward-auth, which says where the original request's method and URI
/// are read from. Headers of the other kinds are ignored: a proxy passes its client's headers on
/// to the subrequest, so a header the configured proxy does not set is the client's.
public enum ProxyKind: String, Sendable, Hashable, CaseIterable {
    /// nginx `auth_request` (also any proxy configured to send the same headers):
    /// `X-Original-Method` and `X-Original-URI`.
    case nginx
    /// Traefik `forwardAuth`, Caddy `forward_auth`: `X-Forwarded-Method` and `X-Forwarded-Uri`.
    case traefik
    /// Envoy `ext_authz` (HTTP): the original method, and the original path after `/authorize`.
    case envoy
}

/// How forward-auth decides, as the operator configured it.
public struct ForwardAuthOptions: Sendable {
    /// Which permissions each request needs (nil: the trusted proxy's `X-Required-Permissions`).
    public var routes: RouteTable?
    /// Where the client address comes from.
    public var clientAddress: ClientAddressPolicy
    /// Where the original request comes from.
    public var proxy: ProxyKind

    public init(routes: RouteTable? = nil, clientAddress: ClientAddressPolicy = .init(), proxy: ProxyKind = .nginx) {
        self.routes = routes
        self.clientAddress = clientAddress
        self.proxy = proxy
    }
}

/// The forward-auth decision of `/authorize`, for nginx `auth_request`, Traefik `forwardAuth`,
/// Envoy `ext_authz` (HTTP) and Caddy `forward_auth`: the same check, the same audit event
/// (trigger `api`, the original method and URI as the resource) as the RPC Check.
///
/// - The key: `Authorization: Bearer dbm_…`, else `X-API-Key`.
/// - The original request: from the headers of the configured ``ProxyKind`` when the peer is a
///   trusted proxy, else this request's own method and its path after `/authorize`.
/// - The permissions: with a route table, the table's for the original method and normalized
///   path (``RequestPath``; no matching route: 403; a path that cannot be judged: 400), and no
///   request header changes that. Without one, a trusted proxy's `X-Required-Permissions`
///   (comma-separated catalog names; an empty or unknown name: 400), else none (a valid key is
///   enough).
/// - The client address: ``ClientAddressPolicy``.
/// - A denial names its reason in `X-Deny-Reason` and in its JSON body; RATE_LIMITED is 429 with
///   `Retry-After`, or 403 when the request says `X-Rate-Limited-Status: 403` (nginx). A refusal
///   (`INVALID_PATH`, `INVALID_ARGUMENT`) is 400, or 403 to a trusted nginx.
package struct ForwardAuth: Sendable {
    let server: APIKeysServer
    let options: ForwardAuthOptions
    /// Counts forwarding headers sent by untrusted peers (not believed).
    let ignoredForwardingHeaders: Counter?

    /// The prefix this is served under.
    static let pathPrefix = "/authorize"

    /// Whether `path` is ``pathPrefix`` or under it.
    static func serves(_ path: String) -> Bool {
        guard path.hasPrefix(pathPrefix) else { return false }
        let rest = afterPrefix(path)
        return rest == path.utf8.endIndex || path.utf8[rest] == UInt8(ascii: "/")
    }

    /// Where `path`, which starts with ``pathPrefix``, goes on after it: found by bytes (the
    /// prefix is ASCII), not by characters, as this runs for every request.
    private static func afterPrefix(_ path: String) -> String.Index {
        path.utf8.index(path.utf8.startIndex, offsetBy: pathPrefix.utf8.count)
    }

    typealias Answer = HTTPResponder.Answer

    /// A connection's peer as forward-auth sees it, worked out once for the connection's life
    /// rather than for each of its requests.
    package struct Peer {
        /// The peer's address, as the socket reports it.
        let address: String
        /// Whether the peer is a trusted proxy (``ClientAddressPolicy/trusts(_:)``).
        let isTrustedProxy: Bool
        /// The secret the connection presented last and its hash: a connection mostly repeats
        /// one key, and its format check and SHA-256 are the larger part of a decision.
        package let secretMemo = PresentedSecretMemo()
        /// Where the connection's checks are counted: its event loop's tally (nil: under the
        /// metrics' lock).
        let checkTally: CheckTally?
    }

    /// The peer of a connection from `address`, whose checks are counted in `tally`.
    func peer(_ address: String, tally: CheckTally?) -> Peer {
        Peer(address: address, isTrustedProxy: options.clientAddress.trusts(address), checkTally: tally)
    }

    /// The decision on a request of `method` to `path` (under ``pathPrefix``) from `peer`.
    func authorize(method: String, path: String, headers: HTTPHeaders, peer: Peer) -> Answer {
        let fromProxy = peer.isTrustedProxy
        var answer = decide(method: method, path: path, headers: headers, peer: peer, fromProxy: fromProxy)
        // nginx's auth_request passes on only 2xx, 401 and 403 (anything else becomes its own
        // 500): a refusal reaches it as 403, and its configuration maps it back by X-Deny-Reason.
        if answer.status == .badRequest && fromProxy && options.proxy == .nginx { answer.status = .forbidden }
        return answer
    }

    private func decide(
        method: String, path: String, headers: HTTPHeaders, peer: Peer, fromProxy: Bool
    ) -> Answer {
        let original = originalRequest(method: method, path: path, headers: headers, fromProxy: fromProxy)
        let (key, repeated) = Self.presentedKey(headers)
        guard !key.isEmpty else {
            return Self.answer(.unauthorized, reason: "NO_KEY", challenge: #"Bearer realm="apikeyd""#)
        }
        let client = options.clientAddress.resolve(peer: peer.address, headers: headers)
        if client.ignoredHeader { ignoredForwardingHeaders?.increment() }
        let resource = "\(original.method) \(original.uri)"
        // A request that cannot be judged is refused before any decision, and recorded.
        func refuse(_ reason: String, _ message: String) -> Answer {
            _ = try? server.recordInvalidRequest(
                secret: key, resource: resource, clientAddress: client.address, why: "\(reason): \(message)",
                tally: peer.checkTally)
            return Self.answer(.badRequest, reason: reason, message: message)
        }
        // One credential, given once: with two, the proxy, this server and the upstream could
        // each take a different one (Authorization is not a list, RFC 9110 §11.6.2).
        guard !repeated else {
            return refuse("INVALID_ARGUMENT", "more than one Authorization or X-API-Key header")
        }
        let permissions: [String]
        if let routes = options.routes {
            let normalized: String
            do {
                normalized = try RequestPath.normalized(original.uri)
            } catch {
                return refuse("INVALID_PATH", error.description)
            }
            guard let routed = routes.permissions(method: original.method, path: normalized) else {
                return Self.answer(
                    .forbidden, reason: "NO_ROUTE",
                    challenge: #"Bearer realm="apikeyd", error="insufficient_scope""#)
            }
            permissions = routed
        } else if fromProxy, case let values = headers[Self.requiredPermissions], !values.isEmpty {
            let names = values.joined(separator: ",").split(separator: ",", omittingEmptySubsequences: false)
                .map { String($0.trimmingOptionalWhitespace) }
            guard !names.contains(where: \.isEmpty) else {
                return refuse("INVALID_ARGUMENT", "X-Required-Permissions holds an empty name")
            }
            guard names.allSatisfy(server.service.catalog.contains) else {
                return refuse(
                    "INVALID_ARGUMENT", "X-Required-Permissions names a permission that is not in the catalog")
            }
            permissions = names
        } else {
            permissions = []
        }
        let outcome: CheckOutcome
        do {
            outcome = try server.check(
                secret: key, permissions: permissions, resource: resource, clientAddress: client.address,
                memo: peer.secretMemo, tally: peer.checkTally)
        } catch let error as KeyError {
            return refuse("INVALID_ARGUMENT", error.description)
        } catch {
            // Fail closed, saying why as the RPC port would: a replica past its staleness bound,
            // an audit trail that cannot take the check (a stalled disk), a server shutting down.
            let failure = server.failure(of: error, during: "forward-auth")
            return Self.answer(HTTPFailure.status(failure.code), reason: "\(failure.code)", message: failure.message)
        }
        guard let denial = outcome.denial else {
            return Answer(status: .ok, key: outcome.key, body: Self.emptyBody)
        }
        let reason = ServerMetrics.reasonLabel(denial).uppercased()
        if denial == .missingPermission {
            return Self.answer(
                .forbidden, reason: reason, missing: outcome.missingPermissions,
                challenge:
                    #"Bearer realm="apikeyd", error="insufficient_scope", scope=""#
                    + outcome.missingPermissions.map(HeaderValue.safe).joined(separator: " ") + #"""#)
        }
        if denial == .ipNotAllowed {
            return Self.answer(
                .forbidden, reason: reason, message: "this key may not be used from \(client.address)",
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
            let status: HTTPResponseStatus =
                headers.first(name: Self.rateLimitedStatus) == "403" ? .forbidden : .tooManyRequests
            // Whole seconds, rounded up (RFC 9110 §10.2.3); the exact wait is in the body.
            var answer = Self.answer(status, reason: reason, message: "retry after \(outcome.retryAfterMS) ms")
            answer.headers.add(name: "Retry-After", value: String((outcome.retryAfterMS + 999) / 1000))
            return answer
        }
        return Self.answer(
            .unauthorized, reason: reason,
            challenge: #"Bearer realm="apikeyd", error="invalid_token", error_description=""# + reason + #"""#)
    }

    private static func answer(
        _ status: HTTPResponseStatus, reason: String, missing: [String] = [], message: String? = nil,
        challenge: String? = nil
    ) -> Answer {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: denyReason, value: reason)
        if let challenge { headers.add(name: "WWW-Authenticate", value: challenge) }
        var body: [String: Any] = ["reason": reason]
        if !missing.isEmpty { body["missing_permissions"] = missing }
        if let message { body["message"] = message }
        var json = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data()
        json.append(UInt8(ascii: "\n"))
        return Answer(status: status, headers: headers, body: ByteBuffer(bytes: json))
    }

    /// The body of an allowed request, shared rather than allocated per answer.
    private static let emptyBody = ByteBuffer()

    /// The secret of `Authorization: Bearer …` (the scheme's name in any case), else of
    /// `X-API-Key`; and whether either header is given more than once. One pass over the headers:
    /// this runs for every request.
    package static func presentedKey(_ headers: HTTPHeaders) -> (key: String, repeated: Bool) {
        var authorization: String?
        var apiKey: String?
        var repeated = false
        for (name, value) in headers {
            if name.equalsIgnoringASCIICase("authorization") {
                repeated = repeated || authorization != nil
                authorization = authorization ?? value
            } else if name.equalsIgnoringASCIICase("x-api-key") {
                repeated = repeated || apiKey != nil
                apiKey = apiKey ?? value
            }
        }
        // "Bearer" has no space: the scheme is the value's first word when it is followed by one.
        if let authorization, authorization.hasPrefixIgnoringASCIICase("bearer ") {
            return (authorization.fieldValue(fromByte: 7), repeated)
        }
        return (apiKey?.fieldValue() ?? "", repeated)
    }

    /// The method and URI the proxy asks about: from the headers of the configured proxy kind
    /// when the peer is a trusted proxy; else (and for Envoy) this request's own method and its
    /// path after ``pathPrefix``.
    private func originalRequest(method: String, path: String, headers: HTTPHeaders, fromProxy: Bool)
        -> (method: String, uri: String)
    {
        if fromProxy {
            switch options.proxy {
            case .nginx:
                if let uri = headers.first(name: Self.originalURI) {
                    return (headers.first(name: Self.originalMethod) ?? method, uri)
                }
            case .traefik:
                if let uri = headers.first(name: Self.forwardedURI) {
                    return (headers.first(name: Self.forwardedMethod) ?? method, uri)
                }
            case .envoy:
                break
            }
        }
        let rest = path.hasPrefix(Self.pathPrefix) ? String(path[Self.afterPrefix(path)...]) : path
        return (method, rest.isEmpty ? "/" : rest)
    }

    static let requiredPermissions = "X-Required-Permissions"
    static let originalMethod = "X-Original-Method"
    static let originalURI = "X-Original-URI"
    static let forwardedMethod = "X-Forwarded-Method"
    static let forwardedURI = "X-Forwarded-Uri"
    /// On every denial: its reason, for a proxy that cannot read the body.
    static let denyReason = "X-Deny-Reason"
    /// `403` asks for a rate-limited check to be answered 403 instead of 429.
    static let rateLimitedStatus = "X-Rate-Limited-Status"
}
