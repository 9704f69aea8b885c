import APIKeysCore
import APIKeysJSON
import APIKeysServer
import APIKeysWire
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The web console (`/`): its page and assets, embedded in the binary (`Generated/ConsoleAssets.swift`,
/// from `console/`), and its sessions: a browser signs in once with an admin token, and from then
/// on its cookie stands for that token on `/v1` (``ConsoleSessionMiddleware``). The page itself is
/// a client of the JSON API.
struct ConsoleRoutes: Sendable {
    let server: APIKeysServer
    let sessions: ConsoleSessions
    /// `https` or `http`: the origin a state-changing request must come from.
    let scheme: String
    let clock: any WallClock
    let logger: Logger

    func register(on router: Router<AdminRequestContext>) {
        for asset in ConsoleAssets.all {
            router.get(RouterPath(asset.path)) { _, _ in
                var headers = AdminResponse.commonHeaders
                headers[.contentType] = asset.contentType
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: asset.body)))
            }
        }
        router.post("/console/session") { request, context in try await signIn(request, context: context) }
        router.get("/console/session") { request, _ in try await current(request) }
        router.delete("/console/session") { request, _ in try signOut(request) }
    }

    /// What the page learns at sign-in and on reload: the token's name and scope, and the CSRF
    /// token its state-changing requests carry.
    struct SessionJSON: Encodable {
        let csrfToken: String
        let token: AdminTokenJSON
    }

    private struct SignInBody: Decodable {
        let token: String
    }

    /// `POST /console/session {"token": "adm_…"}`: the token is checked as any request's would be
    /// (WhoAmI through the gate); a wrong one counts against the client address, which may fail
    /// five times a minute. A token the server has seen valid is not a guess: it signs in even
    /// from an address past its failures, which others behind the same proxy or NAT may have
    /// spent (``KeyService/knownAdminTokenHash(_:)``, from memory).
    private func signIn(_ request: Request, context: AdminRequestContext) async throws -> Response {
        try Self.requireSameOrigin(request, scheme: scheme)
        let nowMS = clock.nowMS()
        var request = request
        let bytes = try await request.collectBody(upTo: 4096)
        let presented = try? JSONDecoder().decode(SignInBody.self, from: Data(bytes.readableBytesView))
        let seenValid = presented.flatMap { server.service.knownAdminTokenHash($0.token) } != nil
        if !seenValid, let waitMS = sessions.signInWait(address: context.clientAddress, nowMS: nowMS) {
            return try Problem.tooManyRequests(
                "too many failed sign-ins from this address; try again in a minute", waitMS: waitMS,
                request: request, context: context)
        }
        guard let body = presented, body.token.hasPrefix("adm_"), body.token.utf8.count <= 256 else {
            sessions.signInFailed(address: context.clientAddress, nowMS: nowMS)
            throw Problem(.unauthenticated, "paste an admin token (adm_…)")
        }
        let token: AdminToken
        do {
            token = try await whoAmI(body.token)
        } catch let problem as Problem where problem.status == .unauthorized {
            sessions.signInFailed(address: context.clientAddress, nowMS: nowMS)
            logger.notice("console sign-in refused", metadata: ["client": "\(context.clientAddress)"])
            throw problem
        }
        // A new id at every sign-in; a session this browser had before ends.
        if let previous = sessions.id(in: request.head) { sessions.end(previous) }
        let (id, session) = sessions.open(token: body.token, nowMS: nowMS)
        var response = try AdminResponse.json(
            SessionJSON(csrfToken: session.csrf, token: AdminTokenJSON(token)), status: .ok)
        response.headers[.setCookie] = sessions.cookie(id)
        return response
    }

    /// `GET /console/session`: the signed-in token (checked again: a revoked one ends the
    /// session), or 401.
    private func current(_ request: Request) async throws -> Response {
        guard let id = sessions.id(in: request.head), let session = sessions.use(id, nowMS: clock.nowMS()) else {
            throw Problem(.unauthenticated, "not signed in")
        }
        do {
            let token = try await whoAmI(session.token)
            return try AdminResponse.json(
                SessionJSON(csrfToken: session.csrf, token: AdminTokenJSON(token)), status: .ok)
        } catch {
            sessions.end(id)
            throw error
        }
    }

    /// `DELETE /console/session`: ends it (with the session's CSRF token, from the page's origin).
    private func signOut(_ request: Request) throws -> Response {
        if let id = sessions.id(in: request.head), let session = sessions.use(id, nowMS: clock.nowMS()) {
            try Self.requireSameOrigin(request, scheme: scheme)
            try Self.requireCSRF(request, session: session)
            sessions.end(id)
        }
        var headers = AdminResponse.commonHeaders
        headers[.setCookie] = sessions.cookie(nil)
        return Response(status: .noContent, headers: headers)
    }

    private func whoAmI(_ token: String) async throws -> AdminToken {
        let dispatcher = server.adminGate.dispatcher
        return try await server.adminCall(KeyAdmin.whoAmI, authorization: "Bearer \(token)", logger: logger) {
            try await dispatcher.whoAmI(WhoAmIRequest(), context: $0).token
        }
    }

    /// A state-changing request made with the console's cookie must come from the console's own
    /// page: its `Origin` is this port's (a cross-site form or script sends another, or none).
    static func requireSameOrigin(_ request: Request, scheme: String) throws {
        guard let origin = request.headers[.origin], let host = request.head.authority,
            origin == "\(scheme)://\(host)"
        else {
            throw Problem(
                status: .forbidden, code: "PERMISSION_DENIED",
                detail: "a console request must come from the console's own page (Origin)")
        }
    }

    static func requireCSRF(_ request: Request, session: ConsoleSessions.Session) throws {
        guard let sent = request.headers[.csrfToken], sent == session.csrf else {
            throw Problem(
                status: .forbidden, code: "PERMISSION_DENIED",
                detail: "a console request must carry the session's X-CSRF-Token")
        }
    }
}

/// On `/v1`, a request without an Authorization header but with a console session's cookie is
/// made with the session's admin token; a state-changing one must also carry the session's CSRF
/// token and come from the console's origin. An answer of 401 (the token revoked or expired) ends
/// the session.
struct ConsoleSessionMiddleware: RouterMiddleware {
    typealias Context = AdminRequestContext
    let sessions: ConsoleSessions
    let scheme: String
    let clock: any WallClock

    func handle(
        _ request: Request, context: AdminRequestContext, next: (Request, AdminRequestContext) async throws -> Response
    ) async throws -> Response {
        guard request.uri.path.hasPrefix("/v1/"), request.headers[.authorization] == nil,
            let id = sessions.id(in: request.head)
        else { return try await next(request, context) }
        guard let session = sessions.use(id, nowMS: clock.nowMS()) else {
            throw Problem(.unauthenticated, "the console session has ended; sign in again")
        }
        if ![.get, .head, .options].contains(request.method) {
            try ConsoleRoutes.requireSameOrigin(request, scheme: scheme)
            try ConsoleRoutes.requireCSRF(request, session: session)
        }
        var head = request.head
        head.headerFields[.authorization] = "Bearer \(session.token)"
        do {
            return try await next(Request(head: head, body: request.body), context)
        } catch let problem as Problem where problem.status == .unauthorized {
            sessions.end(id)
            throw problem
        }
    }
}

extension HTTPField.Name {
    static let csrfToken = Self("X-CSRF-Token")!
}
