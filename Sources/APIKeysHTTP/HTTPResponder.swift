import APIKeysCore
import APIKeysServer
import Foundation
import Metrics
import NIOCore
import NIOHTTP1

/// The answers of the HTTP port, shared by every connection.
package struct HTTPResponder: Sendable {
    let server: APIKeysServer
    let metrics: HTTPFrontend.Metrics?
    let forwardAuth: ForwardAuth
    /// Where a leak reporter's address comes from: forward-auth's rule.
    var clientAddress: ClientAddressPolicy { forwardAuth.options.clientAddress }

    /// The answers for `server`: `metrics` is its registry (nil: `/metrics` answers 404),
    /// `forwardAuth` how `/authorize` decides; forwarding headers sent by untrusted peers are
    /// counted in `ignoredForwardingHeaders`.
    package init(
        server: APIKeysServer, metrics: HTTPFrontend.Metrics?, forwardAuth: ForwardAuthOptions,
        ignoredForwardingHeaders: Counter? = nil
    ) {
        self.server = server
        self.metrics = metrics
        self.forwardAuth = ForwardAuth(
            server: server, options: forwardAuth, ignoredForwardingHeaders: ignoredForwardingHeaders)
    }

    package struct Answer {
        package var status: HTTPResponseStatus
        var headers = HTTPHeaders()
        /// The key an allowed forward-auth request presented, said in `X-Key-Id` and `X-Key-Name`:
        /// written straight from the key's state (``ByteBuffer/writeHTTPResponse(_:omitBody:close:keepAlive:)``),
        /// so that the port's most frequent answer makes no `HTTPHeaders`.
        var key: KeyCheckState? = nil
        var body: ByteBuffer
    }

    /// The peer of a connection from `address`, as ``answer(_:peer:)`` takes it; its checks are
    /// counted in `tally`, its event loop's (nil: under the metrics' lock).
    package func peer(_ address: String, tally: CheckTally? = nil) -> ForwardAuth.Peer {
        forwardAuth.peer(address, tally: tally)
    }

    /// The answer to `request` from `peer`.
    package func answer(_ request: HTTPRequestHead, peer: ForwardAuth.Peer) -> Answer {
        let path = Self.path(of: request)
        if ForwardAuth.serves(path) {
            return forwardAuth.authorize(
                method: request.method.rawValue, path: path, headers: request.headers, peer: peer)
        }
        switch path {
        case "/healthz":
            return getOnly(request) { Self.text(.ok, "ok\n") }
        case "/readyz":
            return getOnly(request) {
                if let problem = server.readinessProblem {
                    return Self.text(.serviceUnavailable, "not ready: \(problem)\n")
                }
                return Self.text(.ok, "ready\n")
            }
        case "/metrics" where metrics != nil:
            return getOnly(request) {
                server.refreshMetrics()
                var bytes: [UInt8] = []
                metrics?.registry.emit(into: &bytes)
                bytes += (server.metrics?.checkDurationExposition() ?? "").utf8
                let headers: HTTPHeaders = ["Content-Type": "text/plain; version=0.0.4; charset=utf-8"]
                return Answer(status: .ok, headers: headers, body: ByteBuffer(bytes: bytes))
            }
        case Self.leakPath:  // a POST is read by reportLeaks instead
            var refused = Self.text(.methodNotAllowed, "method not allowed\n")
            refused.headers.add(name: "Allow", value: "POST")
            return refused
        default:
            return Self.text(.notFound, "not found\n")
        }
    }

    /// Where secret scanners post the secrets they found (no admin token: holding one is the proof).
    static let leakPath = "/leaked-keys"
    /// The largest leak report body read, and the most secrets one report may carry.
    static let maxLeakBodyBytes = 64 * 1024
    static let maxLeaksPerReport = 100

    /// Whether `request` is a leak report, whose body is read and answered off the event loop
    /// (``reportLeaks(_:peer:)``) instead of by ``answer(_:peer:)``.
    func isLeakReport(_ request: HTTPRequestHead) -> Bool {
        request.method == .POST && Self.path(of: request) == Self.leakPath
    }

    /// The request's path without its query.
    package static func path(of request: HTTPRequestHead) -> String {
        String(RequestPath.withoutQuery(request.uri))
    }

    /// Reports every secret of `body` as leaked (``KeyService/reportLeakedKey(secret:source:reporterAddress:deadline:)``)
    /// from `peer`: a JSON array of objects with `token` and optionally `url` or `source` (the
    /// format GitHub's secret scanning posts), or plain text, one secret a line. The answer
    /// (`[]`, or `reported N` for text) is the same whatever the secrets were.
    func reportLeaks(_ body: ByteBuffer, peer: String) async -> Answer {
        struct Found: Decodable {
            let token: String
            let url: String?
            let source: String?
        }
        let bytes = Data(body.readableBytesView)
        let isJSON = bytes.first(where: { !Character(UnicodeScalar($0)).isWhitespace }) == UInt8(ascii: "[")
        let found: [(secret: String, source: String)]
        if isJSON {
            guard let decoded = try? JSONDecoder().decode([Found].self, from: bytes) else {
                return Self.text(.badRequest, "expected a JSON array of {\"token\": …, \"url\": …}\n")
            }
            found = decoded.map { ($0.token, $0.url ?? $0.source ?? "") }
        } else {
            found = String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline)
                .map { ($0.trimmingCharacters(in: .whitespaces), "") }.filter { !$0.secret.isEmpty }
        }
        guard found.count <= Self.maxLeaksPerReport else {
            return Self.text(.payloadTooLarge, "at most \(Self.maxLeaksPerReport) secrets a report\n")
        }
        for (secret, source) in found {
            do {
                try await server.service.reportLeakedKey(
                    secret: secret, source: source, reporterAddress: peer, deadline: .after(milliseconds: 10_000))
            } catch {
                // Not acted on: the scanner should send it again.
                let failure = server.failure(of: error, during: "leak report")
                return Self.text(
                    HTTPFailure.status(failure.code),
                    "the report could not be recorded (\(failure.message)); send it again\n")
            }
        }
        if isJSON {
            return Answer(status: .ok, headers: ["Content-Type": "application/json"], body: ByteBuffer(string: "[]"))
        }
        return Self.text(.ok, "reported \(found.count)\n")
    }

    private func getOnly(_ request: HTTPRequestHead, _ answer: () -> Answer) -> Answer {
        guard request.method == .GET || request.method == .HEAD else {
            var refused = Self.text(.methodNotAllowed, "method not allowed\n")
            refused.headers.add(name: "Allow", value: "GET, HEAD")
            return refused
        }
        return answer()
    }

    static func text(_ status: HTTPResponseStatus, _ text: String) -> Answer {
        Answer(status: status, headers: ["Content-Type": "text/plain; charset=utf-8"], body: ByteBuffer(string: text))
    }
}
