import APIKeysCore
import APIKeysJSON
import APIKeysServer
import APIKeysWire
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// The JSON admin API's routes (docs/openapi.json): each one a KeyAdmin call made through the
/// server's ``AdminGate``, so the same token, scope, rules, audit events and errors as the RPC
/// port.
struct AdminRoutes: Sendable {
    let server: APIKeysServer
    let idempotency: IdempotencyCache
    let clock: any WallClock
    let logger: Logger
    /// `GET /v1/audit-chain/verify`'s walks: one at a time, a verdict reused for a minute.
    let verdicts = ChainVerdicts()

    /// The largest request body read; a larger one is answered 413.
    static let maxBodyBytes = 64 * 1024
    /// How long a call may take from its arrival before it is not committed.
    static let callTimeoutMS: UInt32 = 10_000

    private var gate: AdminGate { server.adminGate }

    func register(on router: Router<AdminRequestContext>) {
        router.get("/openapi.json") { _, _ in
            var headers = AdminResponse.commonHeaders
            headers[.contentType] = "application/json"
            return Response(
                status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.json)))
        }
        let v1 = router.group("/v1")
        v1.post("/keys") { request, _ in
            try await creating(request, method: KeyAdmin.createKey) { (body: CreateKeyBody, dispatcher, context) in
                let created = try await dispatcher.createKey(body.request, context: context)
                return IssuedKeyJSON(key: KeyJSON(created.key), secret: created.secret)
            }
        }
        v1.get("/keys") { request, _ in
            try await call(request, KeyAdmin.listKeys) { dispatcher, context in
                let query = Query(request)
                let pageSize: UInt32 = try query.number("page_size")
                let needle = query.string("name_contains")
                guard !needle.isEmpty else {
                    let page = try await dispatcher.listKeys(
                        ListKeysRequest(pageSize: pageSize, pageToken: query.string("page_token")), context: context)
                    return KeyPageJSON(keys: page.keys.map(KeyJSON.init), nextPageToken: page.nextPageToken)
                }
                return try await Self.search(
                    needle, pageSize: pageSize, after: query.string("page_token"), dispatcher: dispatcher,
                    context: context)
            }
        }
        v1.get("/keys/{id}") { request, context in
            let id = try context.parameters.require("id")
            return try await call(request, KeyAdmin.getKey) { dispatcher, context in
                KeyJSON(try await dispatcher.getKey(GetKeyRequest(id: id), context: context).key)
            }
        }
        v1.patch("/keys/{id}") { request, context in
            let id = try context.parameters.require("id")
            return try await call(request, KeyAdmin.updateKey, body: UpdateKeyBody.self) { body, dispatcher, context in
                var update = body.request
                update.id = id
                return KeyJSON(try await dispatcher.updateKey(update, context: context).key)
            }
        }
        v1.delete("/keys/{id}") { request, context in
            let id = try context.parameters.require("id")
            return try await call(request, KeyAdmin.deleteKey, status: .noContent) { dispatcher, context in
                _ = try await dispatcher.deleteKey(DeleteKeyRequest(id: id), context: context)
                return nil as KeyJSON?
            }
        }
        for (action, enabled) in [("enable", true), ("disable", false)] {
            v1.post("/keys/{id}/\(action)") { request, context in
                let id = try context.parameters.require("id")
                return try await call(request, KeyAdmin.setKeyEnabled) { dispatcher, context in
                    KeyJSON(
                        try await dispatcher.setKeyEnabled(
                            SetKeyEnabledRequest(id: id, enabled: enabled), context: context
                        )
                        .key)
                }
            }
        }
        v1.post("/keys/{id}/rotate") { request, context in
            let id = try context.parameters.require("id")
            return try await call(request, KeyAdmin.rotateKey, body: RotateKeyBody.self, bodyOptional: true) {
                body, dispatcher, context in
                let rotated = try await dispatcher.rotateKey(
                    RotateKeyRequest(id: id, graceSeconds: body?.graceSeconds ?? 0), context: context)
                return IssuedKeyJSON(key: KeyJSON(rotated.key), secret: rotated.secret)
            }
        }
        v1.get("/permissions") { request, _ in
            try await call(request, KeyAdmin.listPermissions) { dispatcher, context in
                try await dispatcher.listPermissions(ListPermissionsRequest(), context: context).permissions.map(
                    PermissionJSON.init)
            }
        }
        v1.get("/audit-events") { request, _ in
            try await call(request, KeyAdmin.listAuditEvents) { dispatcher, context in
                let query = Query(request)
                let page = try await dispatcher.listAuditEvents(
                    ListAuditEventsRequest(
                        keyID: query.string("key_id"), action: query.string("action"),
                        sinceMS: try query.time("since"), untilMS: try query.time("until"),
                        pageSize: try query.number("page_size"), pageToken: query.string("page_token")),
                    context: context)
                return AuditPageJSON(page)
            }
        }
        v1.get("/audit-chain") { request, _ in
            try await call(request, KeyAdmin.exportAuditChain) { dispatcher, context in
                let query = Query(request)
                let page = try await dispatcher.exportAuditChain(
                    ExportAuditChainRequest(
                        afterPosition: try query.number("after_position"), sinceMS: try query.time("since"),
                        pageSize: try query.number("page_size")),
                    context: context)
                return AuditChainPageJSON(page)
            }
        }
        v1.get("/audit-chain/verify") { request, _ in
            try await call(request, KeyAdmin.exportAuditChain) { _, _ in
                switch verdicts.claim(nowMS: clock.nowMS()) {
                case .reuse(let verdict): return verdict
                case .busy:
                    throw Problem(
                        status: .conflict, code: "FAILED_PRECONDITION",
                        detail: "a verification of the audit chain is running; try again when it is done")
                case .walk:
                    let verdict: ChainVerificationJSON
                    do {
                        verdict = ChainVerificationJSON(
                            try await server.service.verifyAuditChain(), checkedAtMS: clock.nowMS())
                    } catch let broken as AuditChainVerifier.Break {
                        verdict = ChainVerificationJSON(broken, checkedAtMS: clock.nowMS())
                    } catch {
                        verdicts.abandon()
                        throw error
                    }
                    verdicts.finish(verdict)
                    return verdict
                }
            }
        }
        v1.get("/policy") { request, _ in
            try await call(request, KeyAdmin.getPolicy) { dispatcher, context in
                PolicyJSON(try await dispatcher.getPolicy(GetPolicyRequest(), context: context))
            }
        }
        v1.get("/whoami") { request, _ in
            try await call(request, KeyAdmin.whoAmI) { dispatcher, context in
                AdminTokenJSON(try await dispatcher.whoAmI(WhoAmIRequest(), context: context).token)
            }
        }
        v1.get("/admin-tokens") { request, _ in
            try await call(request, KeyAdmin.listAdminTokens) { dispatcher, context in
                try await dispatcher.listAdminTokens(ListAdminTokensRequest(), context: context).tokens.map(
                    AdminTokenJSON.init)
            }
        }
        v1.post("/admin-tokens") { request, _ in
            try await creating(request, method: KeyAdmin.createAdminToken) {
                (body: CreateAdminTokenBody, dispatcher, context) in
                let created = try await dispatcher.createAdminToken(try body.request(), context: context)
                return IssuedAdminTokenJSON(token: AdminTokenJSON(created.token), secret: created.secret)
            }
        }
        v1.delete("/admin-tokens/{name}") { request, context in
            let name = try context.parameters.require("name")
            return try await call(request, KeyAdmin.revokeAdminToken, status: .noContent) { dispatcher, context in
                _ = try await dispatcher.revokeAdminToken(RevokeAdminTokenRequest(name: name), context: context)
                return nil as KeyJSON?
            }
        }
        v1.post("/check") { request, _ in
            try await call(request, Authorize.check, body: CheckBody.self) { body, _, _ in
                CheckJSON(
                    try gate.check(
                        CheckRequest(
                            key: body.key, permissions: body.permissions ?? [], resource: body.resource ?? "",
                            clientAddress: body.clientAddress ?? "")))
            }
        }
    }

    /// Keys whose name holds `needle` (ignoring case), reading whole pages of the listing after
    /// `token` until `pageSize` match or ``maxKeysPerSearch`` were read; the token continues
    /// after the last page read.
    private static func search(
        _ needle: String, pageSize: UInt32, after token: String, dispatcher: AdminDispatcher,
        context: AdminCallContext
    ) async throws -> KeyPageJSON {
        guard needle.count <= 100 else { throw RPCError(.invalidArgument, "name_contains: at most 100 characters") }
        let wanted = Int(pageSize == 0 ? 50 : min(pageSize, 1000))
        var found: [ApiKey] = []
        var (token, scanned) = (token, 0)
        repeat {
            let page = try await dispatcher.listKeys(
                ListKeysRequest(pageSize: UInt32(wanted), pageToken: token), context: context)
            found += page.keys.filter { $0.name.range(of: needle, options: .caseInsensitive) != nil }
            scanned += page.keys.count
            token = page.nextPageToken
        } while !token.isEmpty && found.count < wanted && scanned < maxKeysPerSearch
        return KeyPageJSON(keys: found.map(KeyJSON.init), nextPageToken: token)
    }

    /// Keys one search request reads at most.
    static let maxKeysPerSearch = 10_000

    // MARK: Calls

    /// A call without a body.
    private func call<Output: Encodable>(
        _ request: Request, _ method: any RPCMethodDescriptor, status: HTTPResponse.Status = .ok,
        _ run: (AdminDispatcher, AdminCallContext) async throws -> Output?
    ) async throws -> Response {
        try Self.refuseCredentialsInURL(request)
        let output = try await gated(request, method) { try await run(gate.dispatcher, $0) }
        return try AdminResponse.json(output, status: status)
    }

    /// A call with a JSON body (`bodyOptional`: an empty body is nil).
    private func call<Body: AdminRequestBody, Output: Encodable>(
        _ request: Request, _ method: any RPCMethodDescriptor, body: Body.Type, bodyOptional: Bool = false,
        status: HTTPResponse.Status = .ok, _ run: (Body?, AdminDispatcher, AdminCallContext) async throws -> Output?
    ) async throws -> Response {
        try Self.refuseCredentialsInURL(request)
        let bytes = try await Self.body(of: request, optional: bodyOptional)
        let output = try await gated(request, method) { context in
            let body = try bytes.map { try Body.decode($0) }
            return try await run(body, gate.dispatcher, context)
        }
        return try AdminResponse.json(output, status: status)
    }

    private func call<Body: AdminRequestBody, Output: Encodable>(
        _ request: Request, _ method: any RPCMethodDescriptor, body: Body.Type, status: HTTPResponse.Status = .ok,
        _ run: (Body, AdminDispatcher, AdminCallContext) async throws -> Output
    ) async throws -> Response {
        try await call(request, method, body: body, bodyOptional: false, status: status) { body, dispatcher, context in
            try await run(body!, dispatcher, context)
        }
    }

    /// A POST that creates: `Idempotency-Key` (at most 255 characters) makes a retry return the
    /// first answer instead of creating again (``IdempotencyCache``).
    private func creating<Body: AdminRequestBody, Output: Encodable>(
        _ request: Request, method: any RPCMethodDescriptor,
        _ run: @escaping (Body, AdminDispatcher, AdminCallContext) async throws -> Output
    ) async throws -> Response {
        guard let idempotencyKey = request.headers[.idempotencyKey] else {
            return try await call(request, method, body: Body.self, status: .created, run)
        }
        try Self.refuseCredentialsInURL(request)
        guard !idempotencyKey.isEmpty, idempotencyKey.utf8.count <= 255 else {
            throw Problem(.invalidArgument, "Idempotency-Key: 1 to 255 characters")
        }
        let bytes = try await Self.body(of: request, optional: false) ?? Data()
        let fingerprint = Self.fingerprint(bytes)
        // Claimed once the create's own authentication and scope check passed: the cache is per
        // token, and a caller without the scope learns nothing from it.
        // The create's answer (encoded once: sent, and kept for retries), or the claim that refused it.
        let outcome = try await gated(request, method) { context -> Result<ByteBuffer, ClaimRefused> in
            let key = IdempotencyCache.Key(
                actor: context.actor.name, path: request.uri.path, idempotencyKey: idempotencyKey)
            let claim = idempotency.claim(key, fingerprint: fingerprint, nowMS: clock.nowMS())
            guard claim == .run else { return .failure(ClaimRefused(claim: claim)) }
            do {
                let body = try AdminResponse.encode(try await run(try Body.decode(bytes), gate.dispatcher, context))
                idempotency.finish(key, fingerprint: fingerprint, status: .created, body: body, nowMS: clock.nowMS())
                return .success(body)
            } catch {
                idempotency.abandon(key)
                throw error
            }
        }
        var headers = AdminResponse.commonHeaders
        headers[.contentType] = "application/json"
        let claim: IdempotencyCache.Claim
        switch outcome {
        case .success(let body):
            return Response(status: .created, headers: headers, body: .init(byteBuffer: body))
        case .failure(let refused):
            claim = refused.claim
        }
        switch claim {
        case .replay(let status, let body):
            headers[.idempotentReplayed] = "true"
            return Response(status: status, headers: headers, body: .init(byteBuffer: body))
        case .inProgress:
            throw Problem(
                status: .conflict, code: "FAILED_PRECONDITION",
                detail: "a request with this Idempotency-Key is still being answered; retry shortly")
        case .differentRequest, .run:
            throw Problem(
                status: .unprocessableContent, code: "INVALID_ARGUMENT",
                detail: "this Idempotency-Key was used with a different request")
        }
    }

    /// What makes two creates the same request: the body's JSON with its keys sorted (a retry may
    /// order or space its fields differently), or its bytes when it is not JSON.
    private static func fingerprint(_ body: Data) -> SecretHash {
        let canonical =
            (try? JSONSerialization.jsonObject(with: body)).flatMap {
                try? JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys, .fragmentsAllowed])
            } ?? body
        return canonical.withUnsafeBytes { SecretHash(ofBytes: $0) }
    }

    /// Runs `body` through the gate, turning what it throws into problem details.
    private func gated<Result>(
        _ request: Request, _ method: any RPCMethodDescriptor, _ body: (AdminCallContext) async throws -> Result
    ) async throws -> Result {
        try await server.adminCall(method, authorization: request.headers[.authorization], logger: logger, body)
    }

    /// The request's body, read up to ``maxBodyBytes``: JSON only (415 otherwise); nil when
    /// `optional` and the body is empty.
    private static func body(of request: Request, optional: Bool) async throws -> Data? {
        var request = request
        let buffer = try await request.collectBody(upTo: maxBodyBytes)
        if buffer.readableBytes == 0, optional { return nil }
        let mediaType = request.headers[.contentType]?.split(separator: ";").first?
            .trimmingCharacters(in: .whitespaces).lowercased()
        guard mediaType == "application/json" else {
            throw Problem(
                status: .unsupportedMediaType, code: "INVALID_ARGUMENT",
                detail: "the body must be JSON (Content-Type: application/json)")
        }
        return Data(buffer.readableBytesView)
    }

    /// Credentials belong in the Authorization header: a URL is written to logs and histories, so
    /// one carrying a token or key (in a parameter named for it, or any value that is one) is
    /// refused before anything else.
    static func refuseCredentialsInURL(_ request: Request) throws {
        let named: Set<String> = ["access_token", "token", "api_key", "apikey", "key", "authorization", "secret"]
        for (name, value) in request.uri.queryParameters {
            let value = String(value)
            if named.contains(String(name).lowercased()) || value.hasPrefix("adm_") || value.hasPrefix("dbm_") {
                throw Problem(
                    .invalidArgument,
                    "credentials go in the Authorization header (Bearer), never in the URL; this request was not run")
            }
        }
    }
}

extension APIKeysServer {
    /// Runs `body` as a KeyAdmin call through the server's ``AdminGate`` (token, scope, the
    /// refusal recorded), within ``AdminRoutes/callTimeoutMS``; what it throws becomes problem
    /// details with the same status and client-safe message the RPC port gives.
    func adminCall<Result>(
        _ method: any RPCMethodDescriptor, authorization: String?, logger: Logger,
        _ body: (AdminCallContext) async throws -> Result
    ) async throws -> Result {
        do {
            return try await adminGate.run(
                method, authorization: authorization, deadline: .after(milliseconds: AdminRoutes.callTimeoutMS),
                logger: logger, body)
        } catch {
            let failure = failure(of: error, during: method.path)
            throw Problem(failure.code, failure.message)
        }
    }
}

/// A create not run because its Idempotency-Key was claimed before (``IdempotencyCache/Claim``).
private struct ClaimRefused: Error {
    let claim: IdempotencyCache.Claim
}

extension HTTPField.Name {
    static let idempotencyKey = Self("Idempotency-Key")!
    static let idempotentReplayed = Self("Idempotent-Replayed")!
}

/// Query parameters, parsed with their names in errors.
struct Query {
    private let parameters: [String: String]

    init(_ request: Request) {
        var parameters: [String: String] = [:]
        for (name, value) in request.uri.queryParameters { parameters[String(name)] = String(value) }
        self.parameters = parameters
    }

    func string(_ name: String) -> String { parameters[name] ?? "" }

    /// A whole number of type `T` (`page_size`, `after_position`); 0 when absent.
    func number<T: FixedWidthInteger>(_ name: String, as type: T.Type = T.self) throws -> T {
        guard let text = parameters[name] else { return 0 }
        guard let value = T(text) else { throw RPCError(.invalidArgument, "\(name): a whole number") }
        return value
    }

    /// An RFC 3339 date-time, in milliseconds; 0 when absent.
    func time(_ name: String) throws -> Int64 {
        guard let text = parameters[name] else { return 0 }
        guard let ms = JSONTime.milliseconds(rfc3339: text) else {
            throw RPCError(.invalidArgument, "\(name): an RFC 3339 date-time (2027-01-31T00:00:00Z)")
        }
        return ms
    }
}

/// JSON answers.
enum AdminResponse {
    /// Every answer (the console's page too): never cached (some hold a secret shown once),
    /// never sniffed, never framed, no referrer sent on, and no script or style but the port's own
    /// files (no inline code, no eval).
    static let commonHeaders: HTTPFields = [
        .cacheControl: "no-store", HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        HTTPField.Name("X-Frame-Options")!: "DENY", HTTPField.Name("Referrer-Policy")!: "no-referrer",
        .contentSecurityPolicy:
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
            + "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ]

    static func encode(_ value: some Encodable) throws -> ByteBuffer {
        ByteBuffer(bytes: try ContractJSON.encoder(pretty: false).encode(value))
    }

    /// `value` as JSON with `status`; no body for nil.
    static func json<Output: Encodable>(_ value: Output?, status: HTTPResponse.Status) throws -> Response {
        var headers = commonHeaders
        guard let value else { return Response(status: status, headers: headers) }
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: try encode(value)))
    }
}

/// The server's verdicts on its own audit chain (`GET /v1/audit-chain/verify`). A walk reads the
/// whole trail, so one runs at a time and a verdict is answered again for a minute (its
/// `checked_at` says when it was reached): a `read` token cannot keep a core walking.
final class ChainVerdicts: Sendable {
    static let reuseMS: Int64 = 60_000

    enum Claim {
        case reuse(ChainVerificationJSON)
        case busy
        case walk
    }

    private struct State {
        var walking = false
        var last: ChainVerificationJSON?
    }

    private let state = Mutex(State())

    func claim(nowMS: Int64) -> Claim {
        state.withLock { state in
            if let last = state.last, nowMS - last.checkedAtMS < Self.reuseMS { return .reuse(last) }
            guard !state.walking else { return .busy }
            state.walking = true
            return .walk
        }
    }

    func finish(_ verdict: ChainVerificationJSON) {
        state.withLock { state in
            state.walking = false
            state.last = verdict
        }
    }

    func abandon() { state.withLock { $0.walking = false } }
}
