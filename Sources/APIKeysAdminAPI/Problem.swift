import APIKeysCore
import APIKeysWire
import Foundation
import HTTPTypes
import Hummingbird
import NIOHTTP1

/// An error answered as RFC 9457 problem details (`application/problem+json`): `type`, `title`,
/// `status`, `detail`, and `code`, the contract's status name (`PERMISSION_DENIED`). The detail
/// is the same client-safe message the RPC port gives: never a path, SQL or a library's text.
struct Problem: Error, HTTPResponseError {
    let status: HTTPResponse.Status
    /// The contract's status name.
    let code: String
    let detail: String

    init(status: HTTPResponse.Status, code: String, detail: String) {
        (self.status, self.code, self.detail) = (status, code, detail)
    }

    /// A failure with the contract's status `code`.
    init(_ code: StatusCode, _ detail: String) {
        self.init(status: HTTPResponse.Status(code: code.httpStatus), code: code.description, detail: detail)
    }

    struct Body: Encodable {
        let type, title: String
        let status: Int
        let detail, code: String
    }

    var body: Body {
        Body(
            type: "urn:apikeyd:problem:\(code.lowercased().replacingOccurrences(of: "_", with: "-"))",
            title: HTTPResponseStatus(statusCode: status.code).reasonPhrase, status: status.code, detail: detail,
            code: code)
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = AdminResponse.commonHeaders
        headers[.contentType] = "application/problem+json"
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer realm=\"apikeyd\"" }
        // The rest of a body too large is not read: the connection ends with this answer.
        if status == .contentTooLarge { headers[.connection] = "close" }
        let bytes = (try? JSONEncoder().encode(body)) ?? Data()
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// 429 with `detail` and `Retry-After`: the wait of `waitMS` in whole seconds, at least 1.
    static func tooManyRequests(_ detail: String, waitMS: Int64, request: Request, context: some RequestContext)
        throws -> Response
    {
        var refused = try Problem(status: .tooManyRequests, code: "RESOURCE_EXHAUSTED", detail: detail)
            .response(from: request, context: context)
        refused.headers[.retryAfter] = "\(max(1, (waitMS + 999) / 1000))"
        return refused
    }

    /// A status HTTP's own layer answered with (no route, method not allowed, body too large).
    init(httpStatus status: HTTPResponse.Status) {
        let code: String
        switch status {
        case .notFound: code = "NOT_FOUND"
        case .methodNotAllowed: code = "METHOD_NOT_ALLOWED"
        case .contentTooLarge: code = "RESOURCE_EXHAUSTED"
        case .unsupportedMediaType: code = "UNSUPPORTED_MEDIA_TYPE"
        case .badRequest: code = "INVALID_ARGUMENT"
        default: code = status.code >= 500 ? "INTERNAL" : "FAILED_PRECONDITION"
        }
        let detail: String
        switch status {
        case .notFound: detail = "no such path; the API is described at /openapi.json"
        case .contentTooLarge: detail = "the body is larger than \(AdminRoutes.maxBodyBytes) bytes"
        default: detail = HTTPResponseStatus(statusCode: status.code).reasonPhrase
        }
        self.init(status: status, code: code, detail: detail)
    }
}

/// Answers every error of the routes below it, and every error page of HTTP's own layer, as
/// problem details; a failure of the server itself was logged with its cause by the gate.
struct ProblemResponder<Inner: HTTPResponder>: HTTPResponder where Inner.Context == AdminRequestContext {
    let inner: Inner
    /// The methods of each path template, to tell 405 (with `Allow`) from 404.
    let methods: PathMethods
    /// The port's request rate (``AdminAPI/Options/requestsPerSecond``); nil: none.
    let rate: AdminRequestRate?

    func respond(to request: Request, context: AdminRequestContext) async throws -> Response {
        if let rate, let waitMS = rate.take(request.head, nowMS: SystemWallClock().nowMS()) {
            return try Problem.tooManyRequests(
                "the admin API answers at most \(rate.requestsPerSecond) requests a second; retry after the time given",
                waitMS: waitMS, request: request, context: context)
        }
        // `/v1/keys/` is not `/v1/keys`: an empty segment names nothing.
        let path = request.uri.path
        if path.contains("//") || (path.count > 1 && path.hasSuffix("/")) {
            return try Problem(httpStatus: .notFound).response(from: request, context: context)
        }
        let response: Response
        do {
            response = try await inner.respond(to: request, context: context)
        } catch let problem as Problem {
            return try problem.response(from: request, context: context)
        } catch let error as any HTTPResponseError {
            return try Problem(httpStatus: error.status).response(from: request, context: context)
        } catch {
            return try Problem(.internal, "the request failed").response(from: request, context: context)
        }
        guard response.status.code >= 400, response.headers[.contentType] != "application/problem+json" else {
            return response
        }
        if response.status == .notFound, let allowed = methods.allowed(for: request.uri.path) {
            var refused = try Problem(httpStatus: .methodNotAllowed).response(from: request, context: context)
            refused.headers[.allow] = allowed.joined(separator: ", ")
            return refused
        }
        return try Problem(httpStatus: response.status).response(from: request, context: context)
    }
}

/// The methods each path of the OpenAPI document answers, for telling a path that exists with
/// another method (405) from one that does not (404).
struct PathMethods: Sendable {
    private let templates: [(segments: [Substring], methods: [String])]

    /// From the document's `paths` (`/v1/keys/{id}`: a `{…}` segment matches any one segment).
    init(openAPI json: String) {
        let document = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any]
        let paths = document?["paths"] as? [String: [String: Any]] ?? [:]
        templates = paths.map { path, operations in
            (path.split(separator: "/"), operations.keys.map { $0.uppercased() }.sorted())
        }
    }

    /// The methods `path` answers; nil when no path of the API is like it.
    func allowed(for path: String) -> [String]? {
        let segments = path.split(separator: "/")
        return templates.first { template in
            template.segments.count == segments.count
                && zip(template.segments, segments).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
        }?.methods
    }
}
